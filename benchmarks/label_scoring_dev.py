"""Which label-scoring mode a protocol uses, chosen on its development task only (English: trec).

    .venv/bin/python benchmarks/label_scoring_dev.py [--task trec] [--k 32] [--steps 100] [--seeds 0 1]
        [--model embedded] [--max-length 128] [--batch-size 8]

It scores (1) the frozen model on the task's sampled evaluation lines and (2) prompt tuning trained
from scratch on one half of a k-shot draw and scored on the other half. Each model's candidates are
scored once and compared under every mode of ``label_scoring`` (training does not depend on the
mode). It prints accuracy, macro-F1, the best constant answer's score and the share of the
commonest prediction.
The protocol's choice and its reason are in docs/protocol.md.
"""

import argparse
import tempfile
from pathlib import Path

import torch

from talora import tasks as T
from talora.config import LABEL_SCORING, RunConfig, TrainConfig
from talora.core.backbone import load_backbone
from talora.core.predict import Verbalizer, label_priors, score_candidates, task_metrics
from talora.methods import method_class
from talora.methods.base import NoPrompt
from talora.recipes.pipeline import encode_split, verbalizers_for
from talora.recipes.scorecard import scorecard, scored_examples
from talora.training.trainer import train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="trec")
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--lines", type=int, default=500)
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    backbone = load_backbone(args.model)
    tasks = T.load_tasks(args.data_dir, [args.task])
    task = tasks[args.task]
    base = RunConfig(method="prompt_tuning", model=args.model, max_length=args.max_length, test_examples=args.lines)
    rows = []
    split = T.evaluation_split(task)
    index, lines = scored_examples(task.spec, task.splits[split], args.lines, base.sample_seed)
    methods = [("frozen model", split, None, lines, index)]
    for seed in args.seeds:
        shots = T.few_shot(task, args.k, seed)
        fit, held = shots[::2], shots[1::2]
        method = method_class("prompt_tuning")(base.method_config(), backbone, [args.task]).placed(backbone)
        cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, warmup_steps=10, eval_every=0)
        items = encode_split(backbone, tasks, [args.task], "train", base.max_length, examples={args.task: fit})
        verbs = verbalizers_for(backbone, [task.spec], base)
        with tempfile.TemporaryDirectory() as scratch:
            train(backbone, method, items, [], verbs, {args.task: task.spec.metric}, cfg, Path(scratch), seed)
        methods.append(
            (f"prompt tuning, seed {seed}", "held-out half of the shots", method, held, list(range(len(held))))
        )
    for name, where, method, examples, positions in methods:
        m = method or NoPrompt(backbone, [args.task])
        items = encode_split(backbone, tasks, [args.task], "test", base.max_length, examples={args.task: examples})
        # The candidates are scored once; each mode only compares those scores differently.
        words = Verbalizer.of(task.spec, backbone.tokenizer).words
        with torch.no_grad(), m.applied(backbone):
            raw = [
                s
                for i in range(0, len(items), 32)
                for s in score_candidates(backbone, m, items[i : i + 32], [words] * len(items[i : i + 32]))
            ]
        for mode in LABEL_SCORING:
            verb = Verbalizer.of(task.spec, backbone.tokenizer, mode, base.max_length)
            with torch.no_grad(), m.applied(backbone):
                prior = label_priors(backbone, m, {0: verb}, [0]).get(0)
            preds = [verb.decide(verb.adjust(s, verb.words, prior)) for s in raw]
            metrics = task_metrics(items, preds, {0: verb}, [args.task])[args.task]
            card = scorecard(task.spec, where, positions, len(positions), items, preds, metrics)
            rows.append((name, where, mode, len(examples), metrics, card))
    print("| scored | lines | mode | accuracy | macro-F1 | best constant (accuracy) | commonest prediction |")
    print("|---|---|---|---|---|---|---|")
    for name, where, mode, n, metrics, card in rows:
        print(
            f"| {name} ({where}) | {n} | {mode} | {100 * metrics['accuracy']:.1f} | {100 * metrics['macro_f1']:.1f} | "
            f"{100 * card['majority']['metrics']['accuracy']:.1f} | {100 * card['top_share']:.0f} % |"
        )


if __name__ == "__main__":
    main()
