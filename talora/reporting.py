"""The trainer's log points, sent also to a dashboard users already read: TensorBoard, W&B, MLflow.

``log.jsonl`` stays the record (and ``talora analyze run`` plots it); a ``Reporter`` mirrors the
same points as scalars: ``train/loss``, ``train/regulariser``, ``lr/<AdamW group>``,
``gate/layer_<decoder layer>``, ``eval/score`` and ``eval/<task>/<metric>``. Each backend's
library is imported only when a run asks for it, and reading a config never imports one
(``missing_package`` only looks the package up), so ``talora.config`` stays light.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path

REPORT_TO = ("none", "tensorboard", "wandb", "mlflow")
# backend -> (importable module, what to install)
PACKAGES = {
    "tensorboard": ("tensorboard", "pip install 'talora[tensorboard]' (or: pip install tensorboard)"),
    "wandb": ("wandb", "pip install wandb"),
    "mlflow": ("mlflow", "pip install mlflow"),
}


def missing_package(report_to: str) -> str | None:
    """What to install for ``report_to``, or None when it is available."""
    if report_to not in PACKAGES:
        return None
    module, install = PACKAGES[report_to]
    return install if importlib.util.find_spec(module) is None else None


class Reporter:
    """Receives the scalars of each log point; the base class drops them (``report_to: none``)."""

    def log(self, step: int, scalars: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardReporter(Reporter):
    """Event files in ``<run folder>/tensorboard`` (``tensorboard --logdir runs`` shows every run)."""

    def __init__(self, out_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(out_dir) / "tensorboard"))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)
        # A run that dies (NaN loss, kill) keeps what it logged; a log point comes every few steps.
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbReporter(Reporter):
    """One W&B run per training phase; WANDB_PROJECT, WANDB_ENTITY and WANDB_MODE are honoured."""

    def __init__(self, out_dir: Path, name: str, config: dict):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or "talora",
            name=name,
            dir=str(out_dir),
            config=config,
        )

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


class MLflowReporter(Reporter):
    """One MLflow run per training phase (nested in the caller's active run, if any);
    MLFLOW_TRACKING_URI and MLFLOW_EXPERIMENT_NAME are honoured."""

    def __init__(self, name: str, config: dict):
        import mlflow

        self.mlflow = mlflow
        self.run = mlflow.start_run(run_name=name, nested=mlflow.active_run() is not None)
        mlflow.log_params(config)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.mlflow.log_metrics(scalars, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


def open_reporter(report_to: str, out_dir: Path, name: str, config) -> Reporter:
    """The reporter a TrainConfig's ``report_to`` names; ``config`` (a dataclass) is recorded with the run."""
    params = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config or {})
    if report_to == "tensorboard":
        return TensorBoardReporter(out_dir)
    if report_to == "wandb":
        return WandbReporter(out_dir, name, params)
    if report_to == "mlflow":
        return MLflowReporter(name, params)
    return Reporter()


def train_scalars(record: dict, first_layer: int = 0) -> dict[str, float]:
    """The scalars of one training-log record (the line log.jsonl gets)."""
    out = {"train/loss": float(record["loss"])}
    if record.get("reg") is not None:
        out["train/regulariser"] = float(record["reg"])
    out.update({f"lr/{group}": float(lr) for group, lr in record.get("lr", {}).items()})
    out.update({f"gate/layer_{first_layer + i:02d}": float(g) for i, g in enumerate(record.get("gates") or [])})
    return out


def eval_scalars(scores: dict[str, dict[str, float]], score: float) -> dict[str, float]:
    """The scalars of one evaluation: the headline score and every task's metrics."""
    out = {"eval/score": float(score)}
    for task, metrics in scores.items():
        out.update({f"eval/{task}/{name}": float(v) for name, v in metrics.items() if isinstance(v, (int, float))})
    return out
