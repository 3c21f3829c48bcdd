"""The main job on the embedded default: TA-LoRA beside vanilla prompt tuning, as a sweep.

Sources (synthetic suite): TA-LoRA stage 1 + stage 2, and prompt tuning for the same
total number of steps. Targets: few-shot transfer for each k, from both. The table
reports source scores ("unseen data", on test after selecting on validation) and target
test scores ("unseen tasks").
The packaged config (talora/configs/demo.yaml) is an ordinary sweep config.
"""

from __future__ import annotations

from pathlib import Path

from ..config import PACKAGED_CONFIGS
from .sweep import format_table, run_sweep

DEMO_CONFIG = PACKAGED_CONFIGS / "demo.yaml"


def run_demo(output: Path, config: Path = DEMO_CONFIG, placement: dict | None = None) -> dict:
    """``placement``: ``device``/``dtype`` for the sweep's base run (default: the config's)."""
    results = run_sweep(config, Path(output), overrides={"run": placement} if placement else None)
    print(format_table(results))
    return results
