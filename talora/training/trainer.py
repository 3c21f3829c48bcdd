"""One trainer for every method.

Batches mix tasks (examples-proportional mixing, optionally flattened by a
temperature and capped per task, as in T5); AdamW runs the method's parameter
groups (fast/slow learning rates are just groups); warm-up then a linear or cosine
schedule; gradient clipping; periodic validation keeps the best state; a JSONL log
records loss, learning rates, gates and metrics. The data order is a pure function
of (seed, step), so a resumed run replays exactly what an uninterrupted one does.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..config import TrainConfig
from ..core.backbone import Backbone
from ..core.batching import Encoded, answer_batch
from ..core.forward import answer_loss
from ..core.predict import Verbalizer, evaluate, headline
from ..distributed import World, world
from ..errors import ConfigError, DataError, TrainingError
from ..progress import progress
from ..reporting import Reporter, eval_scalars, open_reporter, train_scalars
from .checkpoint import load_checkpoint, save_checkpoint

if TYPE_CHECKING:
    from ..core.lower_cache import LowerLayerCaches
    from ..methods.base import Method


def mixing_rates(sizes: list[int], temperature: float, cap: int = 0) -> np.ndarray:
    n = np.array([min(s, cap) if cap else s for s in sizes], dtype=np.float64)
    rates = n ** (1.0 / temperature)
    return rates / rates.sum()


class MixtureSampler:
    """Draws mixed-task batches; each task's examples are visited epoch by epoch in a seeded order.

    State is the number of examples drawn per task, so resuming needs only that dict.
    """

    def __init__(self, sizes: list[int], temperature: float, cap: int, seed: int):
        if any(s == 0 for s in sizes):
            raise DataError("a training task has no examples")
        self.sizes, self.seed = sizes, seed
        self.rates = mixing_rates(sizes, temperature, cap)
        self.drawn = [0] * len(sizes)
        self._orders: dict[tuple[int, int], np.ndarray] = {}

    def _order(self, task: int, epoch: int) -> np.ndarray:
        key = (task, epoch)
        if key not in self._orders:
            self._orders[key] = np.random.default_rng([self.seed, task, epoch]).permutation(self.sizes[task])
        return self._orders[key]

    def draw(self, step: int, batch_size: int) -> list[tuple[int, int]]:
        tasks = np.random.default_rng([self.seed, 1 << 20, step]).choice(len(self.sizes), batch_size, p=self.rates)
        picks = []
        for t in tasks.tolist():
            epoch, pos = divmod(self.drawn[t], self.sizes[t])
            picks.append((t, int(self._order(t, epoch)[pos])))
            self.drawn[t] += 1
        return picks


class LengthBuckets:
    """Mixed-task batches with little padding.

    The examples of ``group`` consecutive steps are drawn at once (each step's draw as
    the sampler makes it), sorted by length and cut into batches, which the steps then
    take in a seeded order. Tasks stay mixed; only batch composition changes. To resume
    mid-group, a checkpoint stores the sampler's counters as of the group's start.
    """

    def __init__(self, sampler: MixtureSampler, lengths: list[list[int]], batch_size: int, group: int, seed: int):
        self.sampler, self.lengths, self.batch_size, self.group, self.seed = sampler, lengths, batch_size, group, seed
        self._current: int | None = None
        self._batches: list[list[tuple[int, int]]] = []
        self._start_drawn = list(sampler.drawn)

    def batch(self, step: int) -> list[tuple[int, int]]:
        g = step // self.group
        if g != self._current:
            self._start_drawn = list(self.sampler.drawn)
            pool = [
                pick
                for s in range(g * self.group, (g + 1) * self.group)
                for pick in self.sampler.draw(s, self.batch_size)
            ]
            pool.sort(key=lambda pick: self.lengths[pick[0]][pick[1]])  # stable: ties keep draw order
            cut = [pool[k * self.batch_size : (k + 1) * self.batch_size] for k in range(self.group)]
            order = np.random.default_rng([self.seed, 2 << 20, g]).permutation(self.group)
            self._batches, self._current = [cut[k] for k in order], g
        return self._batches[step - g * self.group]

    def drawn_before(self, step: int) -> list[int]:
        """The sampler counters a resumed run needs to replay ``step`` onwards."""
        return list(self.sampler.drawn) if step % self.group == 0 else list(self._start_drawn)

    def restore(self, drawn: list[int]) -> None:
        self.sampler.drawn, self._current = list(drawn), None


def lr_lambda(cfg: TrainConfig):
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        done = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        if cfg.schedule == "linear":
            return max(0.0, 1.0 - done)
        if cfg.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * done))
        return 1.0

    return factor


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrainResult:
    best_score: float
    best_step: int
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def _state_tensors(method: Method, optimizer, prefix: str = "") -> dict[str, torch.Tensor]:
    tensors = {f"{prefix}method.{k}": v for k, v in method.state_dict().items()}
    for pid, state in optimizer.state_dict()["state"].items():
        for k, v in state.items():
            tensors[f"{prefix}optim.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return tensors


class _StepLoss(torch.nn.Module):
    """One data-parallel rank's share of a step's loss, as a module DistributedDataParallel can wrap
    (its only parameters are the method's; the frozen backbone is held outside the module tree)."""

    def __init__(self, backbone: Backbone, method: Method, lower, checkpoint: bool, world_size: int):
        super().__init__()
        self.method, self.lower, self.checkpoint, self.world_size = method, lower, checkpoint, world_size
        self._backbone = (backbone,)  # a tuple, so nn.Module does not adopt (and broadcast) its weights

    def forward(self, batch, global_tokens: int):
        backbone = self._backbone[0]
        with self.method.applied(backbone):
            ce = answer_loss(backbone, self.method, batch, self.lower, self.checkpoint, reduction="sum")
            aux = self.method.auxiliary_loss(backbone, batch)
        reg = self.method.regularization()
        # DDP averages gradients over ranks: scaling by the world size makes the sum of the ranks'
        # cross-entropies over the global token count, i.e. exactly the single-process gradient.
        total = ce * (self.world_size / global_tokens) + sum(t for t in (aux, reg) if t is not None)
        return total, ce.detach(), reg


def _parallel_step(step_loss, batch, global_tokens: int, w: World):
    """(total loss of this rank, global mean cross-entropy, regulariser) of one data-parallel step."""
    total, ce_sum, reg = step_loss(batch, global_tokens)
    summed = torch.stack([ce_sum.float(), total.detach().float()])
    torch.distributed.all_reduce(summed)
    return total, summed[0] / global_tokens, reg, bool(torch.isfinite(summed[1]))


def train(
    backbone: Backbone,
    method: Method,
    train_items: list[Encoded],
    eval_items: list[Encoded],
    verbalizers: dict[int, Verbalizer],
    metrics: dict[str, str],
    cfg: TrainConfig,
    out_dir: Path,
    seed: int,
    resume: bool = False,
    desc: str = "train",
    lower: LowerLayerCaches | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train ``method`` on ``train_items`` and leave it holding the best validated state.
    ``lower``: the run's lower-layer caches, if it keeps the frozen lower layers' output on disk.
    ``on_step(step, loss)`` is called after every optimiser step, between steps: a server's job
    reports progress there, lets queued requests use the model and stops by raising.
    Under a data-parallel launch each rank trains on its share of every global batch (talora.distributed)."""
    w = world()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    set_seed(seed)
    by_task: dict[int, list[Encoded]] = {}
    for e in train_items:
        by_task.setdefault(e.task_id, []).append(e)
    task_ids = sorted(by_task)
    if not task_ids:
        raise DataError("the training split is empty")
    sampler = MixtureSampler([len(by_task[t]) for t in task_ids], cfg.mixing_temperature, cfg.mixing_cap, seed)
    buckets = LengthBuckets(
        sampler,
        [[len(e.prompt) + len(e.answer) for e in by_task[t]] for t in task_ids],
        cfg.batch_size,
        cfg.length_buckets,
        seed,
    )
    groups = method.param_groups()
    if not groups:
        raise ConfigError(f"method {method.name!r} has no trainable parameters")
    for g in groups:
        g["lr"] *= cfg.lr_scale
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    params = [p for g in groups for p in g["params"]]
    pad = backbone.tokenizer.pad_token_id
    result = TrainResult(best_score=-math.inf, best_step=-1)
    best_state = {k: v.detach().clone() for k, v in method.state_dict().items()}
    start, elapsed = 0, 0.0
    ckpt_dir = out_dir / "checkpoint"
    if resume and (ckpt := load_checkpoint(ckpt_dir)) is not None:
        tensors, meta = ckpt
        start = _restore(method, optimizer, scheduler, buckets, tensors, meta)
        best_state = {k[len("best.") :]: v for k, v in tensors.items() if k.startswith("best.")}
        result = TrainResult(meta["best_score"], meta["best_step"], meta["history"])
        elapsed = meta["seconds"]
    log = (out_dir / "log.jsonl").open("a" if resume else "w") if w.is_main else None
    reporter = open_reporter(cfg.report_to, out_dir, str(out_dir), cfg) if w.is_main else Reporter()
    step_loss = None
    if w.parallel:
        ids = [backbone.device.index] if backbone.device.type == "cuda" else None
        step_loss = torch.nn.parallel.DistributedDataParallel(
            _StepLoss(backbone, method, lower, cfg.gradient_checkpointing, w.size),
            device_ids=ids,
            find_unused_parameters=True,  # e.g. gates a plain-attention ablation never reads
        )
    t0 = time.perf_counter() - elapsed
    # Without evaluation items (few-shot transfer) the last state is the result; checkpoints still follow eval_every.
    eval_steps = {cfg.steps} | (set(range(cfg.eval_every, cfg.steps + 1, cfg.eval_every)) if cfg.eval_every else set())
    bar = progress(range(start, cfg.steps), desc=desc, initial=start, total=cfg.steps)
    for step in bar:
        picks = buckets.batch(step)
        if step_loss is None:
            batch = answer_batch([by_task[task_ids[t]][i] for t, i in picks], pad).to(backbone.device)
            with method.applied(backbone):
                loss = answer_loss(backbone, method, batch, lower, cfg.gradient_checkpointing)
                aux = method.auxiliary_loss(backbone, batch)
            reg = method.regularization()
            total = loss + sum(t for t in (aux, reg) if t is not None)
            finite = bool(torch.isfinite(total))
        else:
            mine = [by_task[task_ids[t]][i] for t, i in w.shard(picks)]
            global_tokens = sum(len(by_task[task_ids[t]][i].answer) for t, i in picks)
            batch = answer_batch(mine, pad).to(backbone.device)
            total, loss, reg, finite = _parallel_step(step_loss, batch, global_tokens, w)
        if not finite:
            uids = [by_task[task_ids[t]][i].uid for t, i in picks]
            raise TrainingError(
                f"loss became {total.item()} at step {step + 1} on batch {uids}; "
                f"the last good checkpoint is kept in {ckpt_dir}"
            )
        with method.applied(backbone):  # checkpointed layers rerun in backward: with the method installed
            total.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if on_step is not None:
            on_step(done, loss.item())
        if done % cfg.log_every == 0 or done == cfg.steps:
            record = {
                "step": done,
                "loss": loss.item(),
                "reg": None if reg is None else reg.item(),
                "lr": {g["name"]: g["lr"] for g in optimizer.param_groups},
                "gates": method.gate_values(),
                **method.log_state(),
            }
            if log is not None:
                log.write(json.dumps(record) + "\n")
            reporter.log(done, train_scalars(record, getattr(method, "first_layer", 0)))
        if done in eval_steps:
            if eval_items:
                scores = evaluate(
                    backbone,
                    method,
                    _eval_subset(eval_items, cfg.eval_examples),
                    verbalizers,
                    cfg.eval_batch_size,
                    lower,
                )
                score = headline(scores, metrics)
                result.history.append({"step": done, "score": score, "metrics": scores})
                if log is not None:
                    log.write(json.dumps({"step": done, "eval": scores, "score": score}) + "\n")
                reporter.log(done, eval_scalars(scores, score))
            else:
                score = float(done)  # nothing to select on: the latest state is the best
            if score > result.best_score:
                result.best_score, result.best_step = score, done
                best_state = {k: v.detach().clone() for k, v in method.state_dict().items()}
            if log is None:
                continue  # rank 0 alone writes the log and the checkpoint
            log.flush()
            meta = {
                "best_score": result.best_score,
                "best_step": result.best_step,
                "history": result.history,
                "seconds": time.perf_counter() - t0,
                "drawn": buckets.drawn_before(done),
                "scheduler": scheduler.state_dict(),
                "rng": rng_state(),
                "optim_groups": [
                    {k: v for k, v in g.items() if k != "params"} for g in optimizer.state_dict()["param_groups"]
                ],
            }
            tensors = {**_state_tensors(method, optimizer), **{f"best.{k}": v for k, v in best_state.items()}}
            save_checkpoint(ckpt_dir, done, tensors, meta)
    if log is not None:
        log.close()
    reporter.close()
    w.barrier()  # what rank 0 wrote is complete before any rank reads it
    method.load_state_dict(best_state)
    result.seconds = time.perf_counter() - t0
    return result


def _restore(method, optimizer, scheduler, buckets: LengthBuckets, tensors, meta) -> int:
    method.load_state_dict({k[len("method.") :]: v for k, v in tensors.items() if k.startswith("method.")})
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    groups = optimizer.state_dict()["param_groups"]
    for g, saved in zip(groups, meta["optim_groups"]):
        g.update(saved)
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    scheduler.load_state_dict(meta["scheduler"])
    buckets.restore(meta["drawn"])
    set_rng_state(meta["rng"])
    return int(meta["step"])


def rng_state() -> dict:
    """Python, NumPy and torch generator states as JSON (the data order itself needs none of them)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state().tolist(),
    }


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


def _eval_subset(items: list[Encoded], per_task: int) -> list[Encoded]:
    if not per_task:
        return items
    seen: dict[int, int] = {}
    subset = []
    for e in items:
        if seen.get(e.task_id, 0) < per_task:
            subset.append(e)
            seen[e.task_id] = seen.get(e.task_id, 0) + 1
    return subset
