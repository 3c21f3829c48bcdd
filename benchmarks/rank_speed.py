"""Ranking multi-token label words: each prompt run once and its candidates scored from its key/value cache
(``score_candidates``) against the reference that runs every (example, label) pair in full
(``score_candidates_by_expansion`` of tests/reference_scores.py), on one classification task whose 10 label
words are all several tokens long.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/rank_speed.py --model embedded --examples 32

Both paths score the same examples as ``evaluate`` batches them (sorted by prompt length, 32 per batch, inside
the method's ``applied``), TA-LoRA's prompts in place with opened gates; the two are timed in turn, 3 times,
and the median of each is printed as examples/s with the ratio (a Markdown table), beside the largest score
difference between them.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch

from talora.core.backbone import load_backbone
from talora.core.batching import encode
from talora.core.predict import Verbalizer, score_candidates
from talora.methods.talora import TALoRA, TALoRAConfig
from talora.tasks import Example, TaskSpec

# The reference scorer lives with the tests that check score_candidates against it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_scores import score_candidates_by_expansion  # noqa: E402

LABELS = (
    " meteorology",
    " cardiology",
    " volcanology",
    " oceanography",
    " entomology",
    " marine biology",
    " space travel",
    " world history",
    " modern art",
    " folk music",
)
WORDS = "the a new study of report on how why old small large storm heart insects ships paint songs".split()


def task(classes: int) -> TaskSpec:
    labels = tuple(str(i) for i in range(classes))
    words = {label: LABELS[i % len(LABELS)] + ("" if i < len(LABELS) else f" {i}") for i, label in enumerate(labels)}
    return TaskSpec("topic", "en", "classification", labels, words, "Text: {text}\nTopic:", "accuracy")


def examples(n: int, classes: int) -> list[Example]:
    rng = random.Random(0)
    return [
        Example(f"topic/validation/{i}", "topic", {"text": " ".join(rng.choices(WORDS, k=rng.randint(8, 40)))}, "0")
        for i in range(n)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--examples", type=int, default=128)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32, help="examples per batch, as evaluate's default")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    backbone = load_backbone(args.model)
    spec = task(args.classes)
    verbalizer = Verbalizer.of(spec, backbone.tokenizer)
    if min(len(w) for w in verbalizer.words) < 2:
        raise SystemExit(f"every label word must be several tokens long with this tokenizer: {verbalizer.words}")
    method = TALoRA(TALoRAConfig(), backbone, [spec.name])
    with torch.no_grad():  # opened gates: the prompt term runs (and counts) as in a trained model
        method.gates.fill_(0.5)
    items = sorted(
        (encode(spec, ex, backbone.tokenizer, 512, 0) for ex in examples(args.examples, args.classes)),
        key=lambda e: len(e.prompt),
    )
    batches = [items[i : i + args.batch_size] for i in range(0, len(items), args.batch_size)]

    @torch.no_grad()
    def run(score) -> list[torch.Tensor]:
        with method.applied(backbone):
            return [s for b in batches for s in score(backbone, method, b, [verbalizer.words] * len(b))]

    paths = {"reference (one row per candidate)": score_candidates_by_expansion, "prompt cache": score_candidates}
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    scores = {}
    for _ in range(args.repeats):
        for name, score in paths.items():
            start = time.perf_counter()
            scores[name] = run(score)
            seconds[name].append(time.perf_counter() - start)
    ref, new = scores.values()
    diff = max(float((a - b).abs().max()) for a, b in zip(ref, new))
    rate = {name: len(items) / statistics.median(s) for name, s in seconds.items()}
    print(
        f"{args.model}: {len(items)} examples, {args.classes} classes "
        f"(label words of {min(map(len, verbalizer.words))}-{max(map(len, verbalizer.words))} tokens), "
        f"batch {args.batch_size}, median of {args.repeats}; threads {torch.get_num_threads()}; "
        f"largest score difference {diff:.2e}\n"
    )
    base = rate[next(iter(paths))]
    print("| path | examples/s | ratio |")
    print("|---|---:|---:|")
    for name, r in rate.items():
        print(f"| {name} | {r:.2f} | {r / base:.2f}x |")


if __name__ == "__main__":
    main()
