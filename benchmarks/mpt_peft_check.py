"""Our MPT beside PEFT's MultitaskPromptTuning on one task: same model, data, budget and trainer.

A check of ``talora/methods/mpt.py`` against the reference implementation in peft 0.21.2.
PEFT's prompt encoder (``MultitaskPromptEmbedding``: P* o (cols @ rows) per task) is wrapped
as a talora method here, so both run through the one trainer with identical batches,
schedule and evaluation. One task, so no distillation (MPT's teachers come from other
source tasks). Both shared prompts start from the same vocabulary embeddings; each keeps its
own task-factor initialisation (ours: u = v = 1, so the prompt starts at P*; PEFT's: entries
from N(0, 0.02), so its prompt starts near zero). Prints the frozen model's zero-shot score
and both methods' scores on the task's validation split.

    python benchmarks/mpt_peft_check.py --model HuggingFaceTB/SmolLM2-135M-Instruct --task movie_sentiment

Run it on a small model only: every step back-propagates through the whole model.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from peft import MultitaskPromptTuningConfig
from peft.tuners.multitask_prompt_tuning import MultitaskPromptEmbedding

from talora import tasks as T
from talora.config import TrainConfig
from talora.core.backbone import Backbone, load_backbone
from talora.core.predict import evaluate
from talora.core.prompts import PromptInputs
from talora.methods.base import Method, NoPrompt
from talora.methods.mpt import MPT, MPTConfig
from talora.recipes.pipeline import encode_split, verbalizers_for
from talora.training.trainer import train


class PeftMPT(Method):
    """PEFT's multitask prompt encoder behind the Method interface (not registered: a benchmark only)."""

    name = "peft_mpt"
    config_cls = dict

    def __init__(self, backbone: Backbone, task_names: list[str], init: torch.Tensor, lr: float):
        super().__init__({}, backbone, task_names)
        length, dim = init.shape
        cfg = MultitaskPromptTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=length,
            token_dim=dim,
            num_transformer_submodules=1,
            num_tasks=len(task_names),
            num_ranks=1,
            prompt_tuning_init="RANDOM",
        )
        self.encoder = MultitaskPromptEmbedding(cfg, backbone.model.get_input_embeddings())
        with torch.no_grad():
            self.encoder.embedding.weight.copy_(init)
        self.lr = lr

    def prompt_inputs(self, task_ids: torch.Tensor, batch=None) -> PromptInputs:
        length = self.encoder.embedding.num_embeddings
        indices = torch.arange(length, device=task_ids.device).expand(len(task_ids), -1)
        return PromptInputs(input_prefix=self.encoder(indices, task_ids))

    def param_groups(self) -> list[dict]:
        return [{"name": "peft_mpt", "params": list(self.encoder.parameters()), "lr": self.lr}]

    def trainable_parameters(self) -> dict[str, int]:
        return {
            "shared": self.encoder.embedding.weight.numel(),
            "per_task": self.encoder.prefix_task_cols[0].numel() + self.encoder.prefix_task_rows[0].numel(),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="hub id or local model folder (a small model)")
    ap.add_argument("--task", default="movie_sentiment")
    ap.add_argument("--data-dir", default=None, help="a folder in the shared-data layout; default: the synthetic suite")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--length", type=int, default=20, help="soft tokens")
    ap.add_argument("--lr", type=float, default=3e-2, help="one rate for the shared prompt and the task factors")
    ap.add_argument("--train-examples", type=int, default=500)
    ap.add_argument("--eval-examples", type=int, default=200)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    backbone = load_backbone(args.model)
    tasks = T.load_tasks(args.data_dir, [args.task])
    spec = tasks[args.task].spec
    train_items = encode_split(backbone, tasks, [args.task], "train", args.max_length, args.train_examples)
    eval_items = encode_split(backbone, tasks, [args.task], "validation", args.max_length, args.eval_examples)
    verbs, metrics = verbalizers_for(backbone, [spec]), {args.task: spec.metric}
    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        warmup_steps=min(10, args.steps // 10),
        eval_every=0,
        log_every=max(1, args.steps // 10),
    )

    ours = MPT(
        MPTConfig(length=args.length, lr=args.lr, lr_task=args.lr, distill_weight=0.0, init_seed=args.seed),
        backbone,
        [args.task],
    )
    theirs = PeftMPT(backbone, [args.task], ours.shared.detach().clone(), args.lr)
    rows = {"zero_shot": NoPrompt(backbone, [args.task]), "talora mpt": ours, "peft MultitaskPromptTuning": theirs}
    results = {}
    for label, method in rows.items():
        start = time.perf_counter()
        if method.param_groups():
            with tempfile.TemporaryDirectory() as scratch:
                train(backbone, method, train_items, [], verbs, metrics, cfg, Path(scratch), args.seed, desc=label)
        score = evaluate(backbone, method, eval_items, verbs)[args.task][spec.metric]
        results[label] = {"score": round(score, 4), "seconds": round(time.perf_counter() - start, 1)}
    print(
        f"task {args.task} ({spec.metric}, {len(eval_items)} validation examples), model {args.model}, "
        f"{args.steps} steps x {args.batch_size}, m={args.length}, lr={args.lr}"
    )
    for label, r in results.items():
        print(f"  {label:28s} {r['score']:.4f}   ({r['seconds']} s)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
