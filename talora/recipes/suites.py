"""Named benchmark suites: which tasks are sources and targets, with the few-shot grid (k, seeds).

A suite is a YAML file (``talora/configs/suites/<name>.yaml``; copy one to make your own) with the keys
``name``, ``description``, ``data_dir``, ``sources``, ``targets``, ``ks``, ``seeds`` and ``shots``. ``data_dir`` is
one of:

* null: the embedded synthetic suite;
* ``shared``: the shared data folder wherever it is found (``$TALORA_DATA``, else ``../shared/data``
  from the current directory, then from the source checkout; see :mod:`talora.data_paths`). The
  packaged suites say this, so they work from any current directory;
* any other path: a folder, a relative one read from the current directory (write ``./shared``
  for a folder of that name).

A ``data_dir`` argument (the CLI's ``--data-dir``) replaces the file's ``data_dir``, keyword included.
Every task named must exist in the suite's data: an unknown suite, key or task is a ConfigError naming it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..config import PACKAGED_CONFIGS, from_dict, read_yaml
from ..data_paths import shared_data_dir
from ..errors import ConfigError, DataError
from ..tasks.sampling import K_ALL, SHOT_MODES, is_k

SUITES_DIR = PACKAGED_CONFIGS / "suites"
SUITES = tuple(sorted(p.stem for p in SUITES_DIR.glob("*.yaml")))
SHARED = "shared"


@dataclass(frozen=True)
class Suite:
    name: str  # the suite's name
    description: str  # one line on what it reproduces
    data_dir: str | None  # null (synthetic suite), shared (the shared data folder) or a folder
    sources: tuple[str, ...]  # source tasks (multi-task training)
    targets: tuple[str, ...]  # unseen target tasks (few-shot transfer)
    ks: tuple[int | str, ...]  # the few-shot grid: shots (counted as `shots` says), or `all` (the whole train split)
    seeds: tuple[int, ...]  # transfer seeds (k-shot sample and order)
    shots: str = "per_class"  # how the paper counts k: per_class (per class of a classification task) | total

    def __post_init__(self):
        if not self.name:
            raise ValueError("name: expected a non-empty string")
        for key in ("sources", "targets"):
            value = getattr(self, key)
            if not value or not all(value):
                raise ValueError(f"{key}: expected a non-empty list of task names, got {list(value)}")
            if len(set(value)) != len(value):
                raise ValueError(f"{key}: names a task twice: {list(value)}")
        if not self.ks or not all(is_k(k) for k in self.ks):
            raise ValueError(f"ks: expected a non-empty list of positive integers or {K_ALL!r}, got {list(self.ks)}")
        if self.shots not in SHOT_MODES:
            raise ValueError(f"shots: expected one of {', '.join(SHOT_MODES)}, got {self.shots!r}")
        if not self.seeds or min(self.seeds) < 0:
            raise ValueError(f"seeds: expected a non-empty list of non-negative integers, got {list(self.seeds)}")
        if both := sorted(set(self.sources) & set(self.targets)):
            raise ValueError(f"task(s) {both} are both sources and targets")


def _path_of(name_or_path: str | Path) -> Path:
    if str(name_or_path) in SUITES:
        return SUITES_DIR / f"{name_or_path}.yaml"
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    raise ConfigError(f"unknown suite {str(name_or_path)!r}: not one of {', '.join(SUITES)} nor a YAML file")


def load_suite(name_or_path: str | Path, data_dir: str | None = None) -> Suite:
    """The suite named (or the suite file at a path), its tasks checked against its data."""
    path = _path_of(name_or_path)
    where = str(path)
    suite = from_dict(Suite, read_yaml(path, "suite"), where)
    if data_dir is None and suite.data_dir == SHARED:
        try:
            data_dir = str(shared_data_dir())
        except ConfigError as err:
            raise ConfigError(f"{where}: data_dir {SHARED}: {err}") from None
    if data_dir is not None:
        suite = dataclasses.replace(suite, data_dir=data_dir)
    _check_tasks(suite, where)
    return suite


def _check_tasks(suite: Suite, where: str) -> None:
    from ..tasks import describe_tasks

    try:
        available = {row["name"] for row in describe_tasks(suite.data_dir)}
    except DataError as err:
        raise ConfigError(
            f"{where}: data_dir {suite.data_dir!r} cannot be read ({err}); pass --data-dir to point at the data folder"
        ) from None
    for key in ("sources", "targets"):
        if unknown := [t for t in getattr(suite, key) if t not in available]:
            raise ConfigError(
                f"{where}: {key}: no task {', '.join(map(repr, unknown))} in {suite.data_dir or 'the synthetic suite'}"
            )
