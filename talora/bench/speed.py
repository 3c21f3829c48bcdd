"""``talora bench speed``: one training step of TA-LoRA against what users would reach for in PEFT.

All configurations run in one process on one batch shape, interleaved (A B C ... A B C
...), so drift in the machine's speed hits every row alike; the figure is the median
step time (forward + backward + AdamW step) over the repetitions, and a ratio between
two rows is the median of their per-repetition ratios. PEFT models are
trained the way their documentation shows (``model(input_ids, labels=...)``: logits at
every position), with labels only on the answer token, as ours. Peak memory is
measured per configuration in a fresh subprocess (CUDA: ``max_memory_allocated``;
CPU: the peak resident set during the steps minus the resident set before them, so
the shared weights are not counted).

The forward-only rows are the bounds a training step cannot beat: the whole frozen
model without autograd (last-position logits only), and the same for the prompted
layers alone with the lower layers read from the cache. ``floor_prompted_layers`` is
the bound for training: the prompted layers' forward and backward, lower layers from
the cache, with nothing trainable but a delta added to the hidden states entering the
first prompted layer (no prompt projections, no prompt attention), the same
answer-only loss and the same pass through those layers (``talora.core.forward``: the last
layer's MLP at the answer positions only). Any deep prompt method must at least
back-propagate through those layers, so ``ratio_to_floor`` of ``talora_cached`` is what
its prompt machinery costs.
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core.backbone import Backbone
from ..core.batching import Encoded, answer_batch
from ..core.forward import (
    _layers_only,
    answer_loss,
    compute_precision,
    hidden_at,
    lower_states,
    output_head,
    scored_index,
)
from ..core.lower_cache import LowerLayerCaches
from ..methods.talora import TALoRA, TALoRAConfig

PEFT_ROWS = ("peft_prompt_tuning", "peft_prefix_tuning", "peft_adaption_prompt", "peft_lora")
TALORA_ROWS = ("talora", "talora_cached")
FLOOR_ROW = "floor_prompted_layers"
BOUND_ROWS = ("forward_only", "forward_only_prompted_layers", FLOOR_ROW)
ROWS = TALORA_ROWS + PEFT_ROWS + BOUND_ROWS
FLOOR_TARGET = 1.15  # talora_cached's step over the floor's: what the prompt machinery may add


@dataclass
class Shape:
    batch_size: int = 8
    seq_len: int = 128
    prompt_length: int = 20  # m for every prompt method (PEFT virtual tokens, adapter_len)
    layers: int | None = None  # L prompted layers (TA-LoRA, AdaptionPrompt); None = half
    lora_rank: int = 8


@dataclass
class Row:
    name: str
    median_step_s: float
    examples_per_s: float
    peak_mem_mb: float | None
    ratio_to_talora: float | None = None
    ratio_to_floor: float | None = None


def _batch(backbone: Backbone, shape: Shape, seed: int = 0):
    """A fixed batch of random tokens: prompt of seq_len-1 tokens, a one-token answer."""
    gen = torch.Generator().manual_seed(seed)
    vocab = backbone.model.config.vocab_size
    ids = torch.randint(10, vocab, (shape.batch_size, shape.seq_len), generator=gen)
    items = [Encoded(f"bench{i}", 0, tuple(row[:-1].tolist()), (int(row[-1]),), "x") for i, row in enumerate(ids)]
    labels = torch.full_like(ids, -100)
    labels[:, -1] = ids[:, -1]
    return answer_batch(items, backbone.tokenizer.pad_token_id), ids, labels


def _talora(backbone: Backbone, shape: Shape) -> TALoRA:
    method = TALoRA(TALoRAConfig(length=shape.prompt_length, layers=shape.layers), backbone, ["bench"]).placed(backbone)
    with torch.no_grad():
        method.gates.fill_(0.1)  # open gates: the prompt path is exercised in full
    return method


def unsupported(backbone: Backbone, name: str) -> str | None:
    """Why row ``name`` cannot run on this backbone's architecture, or None when it can."""
    if name == "peft_adaption_prompt":
        from peft.tuners.adaption_prompt.config import TRANSFORMERS_MODEL_CONFIG

        model_type = backbone.model.config.model_type
        if model_type not in TRANSFORMERS_MODEL_CONFIG:
            known = ", ".join(sorted(TRANSFORMERS_MODEL_CONFIG))
            return f"PEFT's AdaptionPrompt supports {known}, not {model_type}"
    return None


def _peft_model(backbone: Backbone, name: str, shape: Shape, layers: int):
    import peft

    model = copy.deepcopy(backbone.model)
    model.config._attn_implementation = "sdpa"  # PEFT runs the stock attention
    if name == "peft_prompt_tuning":
        cfg = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=shape.prompt_length)
    elif name == "peft_prefix_tuning":
        cfg = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=shape.prompt_length)
    elif name == "peft_adaption_prompt":
        cfg = peft.AdaptionPromptConfig(task_type="CAUSAL_LM", adapter_len=shape.prompt_length, adapter_layers=layers)
    else:
        cfg = peft.LoraConfig(
            task_type="CAUSAL_LM",
            r=shape.lora_rank,
            lora_alpha=2 * shape.lora_rank,
            target_modules=["q_proj", "v_proj"],
            lora_dropout=0.0,
        )
    return peft.get_peft_model(model, cfg)


def _floor_step(backbone: Backbone, shape: Shape, batch) -> Callable[[], None]:
    """The training step of the floor row (see the module docstring)."""
    first = _talora(backbone, shape).first_layer  # the very layers TA-LoRA prompts
    lower = LowerLayerCaches(backbone)
    decoder = backbone.model.get_decoder()
    weight, bias = output_head(backbone)
    delta = torch.zeros(backbone.model.config.hidden_size, device=backbone.device, requires_grad=True)
    optimizer = torch.optim.AdamW([delta])

    def floor_step():
        b = batch.to(backbone.device)
        states = lower.layer(first).states(
            b.input_ids, b.attention_mask, lambda ids, m: lower_states(backbone, ids, m, first)
        )
        # The same shortcut as TA-LoRA's pass: the last layer's position-wise blocks at the answer only.
        scored = scored_index(b.rows, b.cols, states.shape[1])
        layers = _layers_only(decoder, first, len(decoder.layers), True, scored=scored)
        with layers, compute_precision(backbone):
            embeds = (states + delta).to(backbone.model.dtype)
            out = decoder(inputs_embeds=embeds, attention_mask=b.attention_mask, use_cache=False)
        hidden = out.last_hidden_state[b.rows, b.cols]
        logits = F.linear(hidden.to(weight.dtype), weight, bias)
        F.cross_entropy(logits.float(), b.targets).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return floor_step


def make_step(backbone: Backbone, name: str, shape: Shape) -> Callable[[], None]:
    """A closure running one step of configuration ``name`` on the fixed batch."""
    batch, ids, labels = _batch(backbone, shape)
    if name == FLOOR_ROW:
        return _floor_step(backbone, shape, batch)
    ids, labels = ids.to(backbone.device), labels.to(backbone.device)
    mask = torch.ones_like(ids)
    layers = shape.layers or backbone.model.config.num_hidden_layers // 2
    if name in TALORA_ROWS or name == "forward_only_prompted_layers":
        method = _talora(backbone, shape)
        lower = None if name == "talora" else LowerLayerCaches(backbone)
        if name == "forward_only_prompted_layers":

            def forward_prompted():
                with torch.no_grad():
                    hidden_at(backbone, method, batch, lower)

            return forward_prompted
        optimizer = torch.optim.AdamW(method.param_groups())

        def talora_step():
            loss = answer_loss(backbone, method, batch, lower)
            reg = method.regularization()
            (loss if reg is None else loss + reg).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return talora_step
    if name == "forward_only":

        def forward_only():
            with torch.no_grad():
                hidden = backbone.model.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
                backbone.model.get_output_embeddings()(hidden[:, -1])

        return forward_only
    model = _peft_model(backbone, name, shape, layers)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def peft_step():
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return peft_step


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:  # counted in pages, whose size varies by platform
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_memory_mb(backbone: Backbone, name: str, shape: Shape, steps: int = 2) -> float:
    """Peak memory of ``steps`` steps beyond what was resident before them (run in a fresh process)."""
    step = make_step(backbone, name, shape)
    if backbone.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        for _ in range(steps):
            step()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    base, peak, done = _rss_mb(), [0.0], threading.Event()

    def poll():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.002)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    for _ in range(steps):
        step()
    done.set()
    watcher.join()
    return max(peak[0], _rss_mb()) - base


def run_speed(
    backbone: Backbone,
    model_spec: str | None,
    shape: Shape,
    repeats: int = 3,
    rows: tuple[str, ...] = ROWS,
    memory: bool = True,
    progress: Callable[[str], None] = print,
) -> list[Row]:
    """The benchmark table: interleaved timing in this process, memory in one subprocess per row.
    A row the architecture cannot run (``unsupported``), or a PEFT row that PEFT itself fails to
    build or step on this model, is left out, and ``progress`` says why."""
    steps = {}
    for name in rows:
        if (why := unsupported(backbone, name)) is not None:
            progress(f"skipping {name}: {why}")
            continue
        progress(f"preparing {name}")
        try:
            steps[name] = make_step(backbone, name, shape)
            steps[name]()  # warm-up; fills the lower-layer cache for the cached rows
        except Exception as err:
            if name not in PEFT_ROWS:
                raise
            # e.g. PEFT 0.18's prefix tuning on Gemma 3: its own bug, not a reason to lose the other rows.
            steps.pop(name, None)
            progress(f"skipping {name}: PEFT failed on this model ({type(err).__name__}: {err})")
    rows = tuple(steps)
    times: dict[str, list[float]] = {name: [] for name in rows}
    # A GPU runs kernels after the call that queues them returns: wait for them, or a step's time
    # would be the next step's.
    cuda = backbone.device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(backbone.device)) if cuda else (lambda: None)
    sync()
    for rep in range(repeats):
        for name in rows:
            t0 = time.perf_counter()
            steps[name]()
            sync()
            times[name].append(time.perf_counter() - t0)
        progress(f"repetition {rep + 1}/{repeats}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in rows))
    table = []
    for name in rows:
        median = statistics.median(times[name])
        mem = None
        if memory and model_spec is not None:
            progress(f"memory {name}")
            mem = _memory_in_subprocess(backbone, model_spec, name, shape)
        table.append(Row(name, median, shape.batch_size / median, mem))
    # The median of per-repetition ratios: the rows of one repetition run back to back, so a
    # slow spell of the machine (another job starting) cancels out of each pair.
    for ref, field in (("talora", "ratio_to_talora"), (FLOOR_ROW, "ratio_to_floor")):
        if ref in times:
            for row in table:
                setattr(row, field, statistics.median(a / b for a, b in zip(times[row.name], times[ref])))
    return table


def _memory_in_subprocess(backbone: Backbone, model_spec: str, name: str, shape: Shape) -> float:
    code = (
        "import json,sys; from talora.core.backbone import load_backbone; "
        "from talora.bench.speed import Shape, peak_memory_mb;"
        "a=json.loads(sys.argv[1]); b=load_backbone(a['model'], a['dtype'], a['device']);"
        "print(json.dumps(peak_memory_mb(b, a['name'], Shape(**a['shape']))))"
    )
    # The subprocess loads the model as this process did, e.g. bfloat16 on the same GPU.
    placement = {"dtype": str(backbone.dtype).removeprefix("torch."), "device": str(backbone.device)}
    arg = json.dumps({"model": model_spec, "name": name, "shape": asdict(shape), **placement})
    # The cached row reads the cache this process filled: its memory is the warm-cache figure.
    out = subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"memory measurement of {name} failed:\n{out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def format_rows(rows: list[Row], shape: Shape, device: str) -> str:
    lines = [
        f"batch {shape.batch_size} x {shape.seq_len} tokens, prompt length {shape.prompt_length}, "
        f"L = {shape.layers or 'half the layers'}, device {device}",
        "",
        "| configuration | median step (s) | examples/s | peak memory (MB) | × TA-LoRA | × floor |",
        "|---|---|---|---|---|---|",
    ]

    def fmt(x: float | None, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    for r in rows:
        lines.append(
            f"| {r.name} | {r.median_step_s:.3f} | {r.examples_per_s:.1f} | {fmt(r.peak_mem_mb, '.0f')} "
            f"| {fmt(r.ratio_to_talora, '.2f')} | {fmt(r.ratio_to_floor, '.2f')} |"
        )
    cached = next((r for r in rows if r.name == "talora_cached"), None)
    if cached is not None and cached.ratio_to_floor is not None:
        lines += ["", f"talora_cached / {FLOOR_ROW}: {cached.ratio_to_floor:.3f} (target <= {FLOOR_TARGET})"]
    return "\n".join(lines)


def write_json(rows: list[Row], path: Path) -> None:
    records = [
        {
            "name": r.name,
            "median_step_s": r.median_step_s,
            "examples_per_s": r.examples_per_s,
            "peak_mem_mb": r.peak_mem_mb,
            "ratio_to_talora": r.ratio_to_talora,
            "ratio_to_floor": r.ratio_to_floor,
        }
        for r in rows
    ]
    Path(path).write_text(json.dumps(records, indent=1))


@dataclass
class ScoringRow:
    name: str
    median_s: float
    examples_per_s: float
    ratio_to_forward: float | None = None


SCORING_GOAL = 0.9  # ranking a task's labels, against a plain forward over the same lines


def run_scoring(
    backbone: Backbone, task: str = "product_sentiment", lines: int = 500, batch_size: int = 32, repeats: int = 3
) -> list[ScoringRow]:
    """Examples per second of scoring ``lines`` of a synthetic task (ranking its label words with the
    frozen model, as zero-shot scoring does, through ``predict.predictions``) against a plain forward
    of the frozen model over the same prompts, batched and sorted by length alike, with the output
    head at each prompt's last position only: the limit for single-token labels. Interleaved,
    ``repeats`` times, median."""
    from .. import tasks as T
    from ..core.batching import encode, prompt_batch
    from ..core.predict import Verbalizer, predictions
    from ..methods.base import NoPrompt

    spec_task = T.load_tasks(None, [task])[task]
    examples = spec_task.splits[T.evaluation_split(spec_task)]
    examples = [examples[i % len(examples)] for i in range(lines)]
    items = [encode(spec_task.spec, ex, backbone.tokenizer, 256, 0) for ex in examples]
    verbs = {0: Verbalizer.of(spec_task.spec, backbone.tokenizer)}
    method = NoPrompt(backbone, [task])
    order = sorted(items, key=lambda e: len(e.prompt))
    weight, bias = output_head(backbone)
    pad = backbone.tokenizer.pad_token_id

    @torch.no_grad()
    def forward() -> None:
        for start in range(0, len(order), batch_size):
            batch = prompt_batch(order[start : start + batch_size], pad).to(backbone.device)
            with compute_precision(backbone):
                hidden = backbone.model.get_decoder()(
                    input_ids=batch.input_ids, attention_mask=batch.attention_mask
                ).last_hidden_state
            last = hidden[torch.arange(len(hidden)), batch.attention_mask.sum(1) - 1]
            F.linear(last, weight, bias)

    def score() -> None:
        predictions(backbone, method, items, verbs, batch_size)

    times: dict[str, list[float]] = {"forward_only": [], "scoring": []}
    for _ in range(repeats):
        for name, fn in (("forward_only", forward), ("scoring", score)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    fwd = statistics.median(times["forward_only"])
    out = []
    for name, ts in times.items():
        med = statistics.median(ts)
        out.append(ScoringRow(name, med, lines / med, fwd / med))
    return out


def format_scoring(rows: list[ScoringRow], lines: int, task: str) -> str:
    out = [
        f"scoring {lines} lines of {task} (label ranking) against a plain forward over the same lines",
        "",
        "| configuration | median (s) | examples/s | × forward |",
        "|---|---|---|---|",
    ]
    out += [f"| {r.name} | {r.median_s:.2f} | {r.examples_per_s:.1f} | {r.ratio_to_forward:.2f} |" for r in rows]
    scoring = next(r for r in rows if r.name == "scoring")
    out += ["", f"scoring / forward_only throughput: {scoring.ratio_to_forward:.3f} (goal >= {SCORING_GOAL})"]
    return "\n".join(out)
