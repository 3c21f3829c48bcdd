"""How far TA-LoRA's mixed stage 1 is from training each task's deep prompt on its own.

Stage 1 trains every source task's single-task prompt in one run of mixed-task batches.
Each example's gradient reaches only its own task's prompt and gates, yet the run is not
T separate runs: AdamW's momentum moves a task's prompt at steps without its examples,
gradient clipping uses the norm over all tasks, the loss of a step is the mean over all
its answer tokens, and the data order differs. This script measures the gap once:

* ``mixed``: the trainer's stage 1 on the tasks together (seed 0); ``mixed, seed 1`` is
  the same with another data order, the scale of data-order noise;
* ``separate``: one trainer run per task, batch B/T for the same number of steps (the same
  examples per task in expectation), from the same initial rows;
* ``replay``: each task alone on exactly the examples it had in the mixed run, at the same
  steps, with its own AdamW, clipping and loss mean, stepping only when it has examples
  (so what is left between ``mixed`` and ``replay`` is the coupling alone).

For each it prints the largest absolute difference from ``mixed`` of the prompts (L, T, m, d)
and the gates, beside how far ``mixed`` moved the prompts from their start, and each run's
validation scores.

    python benchmarks/stage1_mixed_vs_separate.py --model embedded --steps 60
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import tempfile
import warnings
from pathlib import Path

import torch

from talora import tasks as T
from talora.config import TrainConfig
from talora.core.backbone import load_backbone
from talora.core.batching import answer_batch
from talora.core.forward import answer_loss
from talora.core.predict import evaluate
from talora.methods.talora import TALoRA, TALoRAConfig
from talora.recipes.pipeline import encode_split, verbalizers_for
from talora.training.trainer import LengthBuckets, MixtureSampler, lr_lambda, train


def one_task(method, t: int):
    """A one-task copy of the stage-1 method holding task ``t``'s initial prompt and gates."""
    return method.task_slice(method.task_names[t])


def as_task0(items):
    return [dataclasses.replace(e, task_id=0) for e in items]


def replay(start, by_task, cfg: TrainConfig, seed: int, only: int | None = None):
    """The trainer's step loop over the mixed run's batches, on every task (``only=None``: a check
    that this loop is the trainer) or on task ``only`` alone, which then sees exactly the examples
    it had in the mixed run, at the same steps, and steps only when it has some."""
    method = copy.deepcopy(start) if only is None else one_task(start, only)
    groups = method.param_groups()
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    params = [p for g in groups for p in g["params"]]
    task_ids = sorted(by_task)
    sampler = MixtureSampler([len(by_task[k]) for k in task_ids], cfg.mixing_temperature, cfg.mixing_cap, seed)
    lengths = [[len(e.prompt) + len(e.answer) for e in by_task[k]] for k in task_ids]
    buckets = LengthBuckets(sampler, lengths, cfg.batch_size, cfg.length_buckets, seed)
    pad = BACKBONE.tokenizer.pad_token_id
    for step in range(cfg.steps):
        picks = buckets.batch(step)
        if only is None:
            mine = [by_task[k][i] for k, i in picks]
        else:
            mine = as_task0(by_task[only][i] for k, i in picks if k == only)
        if mine:
            answer_loss(BACKBONE, method, answer_batch(mine, pad)).backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # a task without examples at the first step steps the schedule alone
            warnings.simplefilter("ignore", UserWarning)
            scheduler.step()  # the learning rate of the mixed run's step, whether or not the task took one
    return method


def stack(singles):
    return torch.cat([s.prompts.detach() for s in singles], dim=1), torch.cat([s.gates.detach() for s in singles])


def scores(method, items, verbs, names) -> str:
    got = evaluate(BACKBONE, method, items, verbs)
    return " ".join(f"{n}={got[n][next(iter(got[n]))]:.2f}" for n in names if n in got)


def main() -> None:
    global BACKBONE
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--tasks", default="movie_sentiment,news_topic,question_match")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=6)
    parser.add_argument("--examples", type=int, default=64, help="training examples per task")
    parser.add_argument("--grad-clip", type=float, default=1.0, help="max global gradient norm (0 = off)")
    args = parser.parse_args()
    BACKBONE = load_backbone(args.model, "float32", "cpu")
    names = args.tasks.split(",")
    tasks = T.load_tasks(None, names)
    tr = encode_split(BACKBONE, tasks, names, "train", 128, cap=args.examples)
    ev = encode_split(BACKBONE, tasks, names, "validation", 128, cap=50)
    verbs = verbalizers_for(BACKBONE, [tasks[n].spec for n in names])
    metrics = {n: tasks[n].spec.metric for n in names}
    start = TALoRA(TALoRAConfig(), BACKBONE, names).stage1(BACKBONE)  # TA-LoRA's stage-1 method, defaults
    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        warmup_steps=5,
        eval_every=0,
        log_every=1000,
        grad_clip=args.grad_clip,
    )
    by_task = {k: [e for e in tr if e.task_id == k] for k in range(len(names))}

    def run(method, items, train_cfg, seed, verbalizers, task_metrics):
        with tempfile.TemporaryDirectory() as scratch:
            train(BACKBONE, method, items, [], verbalizers, task_metrics, train_cfg, Path(scratch), seed)
        return method

    mixed = run(copy.deepcopy(start), tr, cfg, 0, verbs, metrics)
    results = {
        "replay loop, all tasks (check)": replay(start, by_task, cfg, 0),
        "mixed, seed 1": run(copy.deepcopy(start), tr, cfg, 1, verbs, metrics),
    }
    small = dataclasses.replace(cfg, batch_size=max(1, args.batch_size // len(names)))
    results["separate"] = [
        run(one_task(start, t), as_task0(by_task[t]), small, 0, {0: verbs[t]}, {n: metrics[n]})
        for t, n in enumerate(names)
    ]
    results["replay, each task alone"] = [replay(start, by_task, cfg, 0, t) for t in range(len(names))]

    ev_by_task = [as_task0(e for e in ev if e.task_id == t) for t in range(len(names))]
    moved = (mixed.prompts.detach() - start.prompts.detach()).abs().max().item()
    print(f"{args.model}, tasks {names}, {args.steps} steps of {args.batch_size}, grad_clip {cfg.grad_clip}")
    print(f"zero-shot: {scores(start, ev, verbs, names)}")  # closed gates: the frozen model
    print(f"mixed: prompts moved at most {moved:.4g} from their start; {scores(mixed, ev, verbs, names)}")
    for label, got in results.items():
        if isinstance(got, list):
            prompts, gates = stack(got)
            task_scores = " ".join(
                scores(s, ev_by_task[t], {0: verbs[t]}, [n]) for t, (n, s) in enumerate(zip(names, got))
            )
        else:
            prompts, gates = got.prompts.detach(), got.gates.detach()
            task_scores = scores(got, ev, verbs, names)
        dp = (prompts - mixed.prompts.detach()).abs().max().item()
        dg = (gates - mixed.gates.detach()).abs().max().item()
        print(f"{label}: max |prompt - mixed| {dp:.4g} ({dp / moved:.0%} of the move), max |gate - mixed| {dg:.4g}")
        print(f"    {task_scores}")


BACKBONE = None

if __name__ == "__main__":
    main()
