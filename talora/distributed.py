"""Data-parallel runs on N processes started by ``torchrun`` or ``accelerate launch``.

Both launchers set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address;
talora reads them, joins the default process group (NCCL on GPUs, Gloo on CPUs) and
otherwise runs the same code as one process:

* every rank draws the same global batch (the sampler is a pure function of seed and
  step) and keeps its share ``picks[rank::world]``, so the global batch and its task
  mix are those of the single-process run with the same seed;
* the loss is the sum of the rank's answer-token cross-entropies over the GLOBAL count
  of answer tokens, scaled by the world size because DistributedDataParallel averages
  gradients: the all-reduced gradient is the single-process gradient;
* gradients are all-reduced by ``torch.nn.parallel.DistributedDataParallel`` around a
  module that computes the step's loss (the method alone holds parameters);
* rank 0 alone writes checkpoints, adapters, metrics, logs and manifests; the others
  wait at a barrier where a later step reads what rank 0 wrote;
* evaluation is sharded the same way and gathered, so every rank computes the same metrics;
* each rank keeps its own lower-layer cache files (one writer per file).

A single process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) never touches torch.distributed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.parallel:
            dist.barrier()

    def gather(self, values: list) -> list:
        """Every rank's list, concatenated in rank order, on every rank."""
        if not self.parallel:
            return list(values)
        out: list = [None] * self.size
        dist.all_gather_object(out, values)
        return [v for part in out for v in part]

    def shard(self, items: list) -> list:
        return items[self.rank :: self.size]


def world() -> World:
    """This process's place in the launch; joins the default process group on first use."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend)
    return World(rank, size, local)


def local_device(device: str, w: World) -> str:
    """``auto``/``cuda`` on a multi-GPU launch means this rank's own GPU."""
    if w.parallel and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{w.local_rank}"
    return device
