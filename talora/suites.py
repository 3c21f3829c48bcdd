"""Named benchmark suites: which tasks are sources and targets, with the few-shot grid (k, seeds).

A suite is a YAML file (``talora/configs/suites/<name>.yaml``; copy one to make your own) with the keys
``name``, ``description``, ``data_dir``, ``sources``, ``targets``, ``ks`` and ``seeds``. ``data_dir``
is null for the embedded synthetic suite; a relative path is read from the current directory, and
a ``data_dir`` argument (the CLI's ``--data-dir``) replaces it. Every task named must exist in the
suite's data: an unknown suite, key or task is a ConfigError naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from .errors import ConfigError, DataError

SUITES_DIR = Path(__file__).parent / "configs" / "suites"
SUITES = tuple(sorted(p.stem for p in SUITES_DIR.glob("*.yaml")))


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    data_dir: str | None
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    ks: tuple[int, ...]
    seeds: tuple[int, ...]


def _path_of(name_or_path: str | Path) -> Path:
    if str(name_or_path) in SUITES:
        return SUITES_DIR / f"{name_or_path}.yaml"
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    raise ConfigError(f"unknown suite {str(name_or_path)!r}: not one of {', '.join(SUITES)} nor a YAML file")


def _names(data: dict, key: str, where: str) -> tuple[str, ...]:
    value = data.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: {key}: expected a non-empty list of task names, got {value!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where}: {key}: names a task twice: {value}")
    return tuple(value)


def _ints(data: dict, key: str, where: str, positive: bool) -> tuple[int, ...]:
    value = data.get(key)
    if not isinstance(value, list) or not value or not all(
            isinstance(v, int) and not isinstance(v, bool) and (v > 0 or not positive and v >= 0) for v in value):
        kind = "positive" if positive else "non-negative"
        raise ConfigError(f"{where}: {key}: expected a non-empty list of {kind} integers, got {value!r}")
    return tuple(value)


def load_suite(name_or_path: str | Path, data_dir: str | None = None) -> Suite:
    """The suite named (or the suite file at a path), its tasks checked against its data."""
    path = _path_of(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    where = str(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of suite keys")
    known = {f.name for f in fields(Suite)}
    if unknown := sorted(set(data) - known):
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if missing := sorted(known - set(data)):
        raise ConfigError(f"{where}: missing key(s) {', '.join(missing)}")
    if not isinstance(data["name"], str) or not data["name"]:
        raise ConfigError(f"{where}: name: expected a non-empty string, got {data['name']!r}")
    if data["data_dir"] is not None and not isinstance(data["data_dir"], str):
        raise ConfigError(f"{where}: data_dir: expected a path or null, got {data['data_dir']!r}")
    suite = Suite(name=data["name"], description=str(data["description"] or ""),
                  data_dir=data_dir if data_dir is not None else data["data_dir"],
                  sources=_names(data, "sources", where), targets=_names(data, "targets", where),
                  ks=_ints(data, "ks", where, positive=True), seeds=_ints(data, "seeds", where, positive=False))
    if both := sorted(set(suite.sources) & set(suite.targets)):
        raise ConfigError(f"{where}: task(s) {both} are both sources and targets")
    _check_tasks(suite, where)
    return suite


def _check_tasks(suite: Suite, where: str) -> None:
    from .tasks import describe_tasks

    try:
        available = {row["name"] for row in describe_tasks(suite.data_dir)}
    except DataError as err:
        raise ConfigError(f"{where}: data_dir {suite.data_dir!r} cannot be read ({err}); "
                          f"pass --data-dir to point at the data folder") from None
    for key in ("sources", "targets"):
        if unknown := [t for t in getattr(suite, key) if t not in available]:
            raise ConfigError(f"{where}: {key}: no task {', '.join(map(repr, unknown))} in "
                              f"{suite.data_dir or 'the synthetic suite'}")
