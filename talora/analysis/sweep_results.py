"""Reading a sweep's results: a paired test between two methods, and few-shot curves.

``compare`` pairs the two methods' scores cell by cell (same task, same k, same seed) and tests
whether their mean difference is zero with an exact sign-flip test (every one of the 2^n sign
patterns when n <= 16 pairs, else 20,000 seeded random ones). The test assumes only that, were
the methods equal, each pair's difference would be as likely positive as negative: no normal
distribution, fit for the handful of cells a table has. A method with one score per row (the
frozen model's zero-shot) is paired with every seed of the other.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import statistics
from pathlib import Path

from ..errors import ConfigError

EXACT_UP_TO = 16
DRAWS = 20_000


def _load(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"results file not found: {path}") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not a sweep's results JSON ({err})") from None


def _values(cell) -> list[float]:
    return [float(cell)] if isinstance(cell, (int, float)) else [float(v) for v in cell]


def paired_cells(results: dict, a: str, b: str, setting: str = "target") -> list[tuple[str, float, float]]:
    block = results.get(setting, {})
    for name in (a, b):
        if name not in block:
            raise ConfigError(f"no method {name!r} in the {setting} scores; there are: {', '.join(block) or 'none'}")
    pairs = []
    for row, cell in block[a].items():
        if row not in block[b]:
            continue
        xs, ys = _values(cell), _values(block[b][row])
        if len(xs) == 1:
            xs = xs * len(ys)
        if len(ys) == 1:
            ys = ys * len(xs)
        pairs += [(f"{row} #{i}", x, y) for i, (x, y) in enumerate(zip(xs, ys, strict=False))]
    return pairs


def sign_flip_p(diffs: list[float]) -> float:
    """Two-sided p of a zero mean difference under random signs."""
    n = len(diffs)
    observed = abs(sum(diffs)) - 1e-12
    if n <= EXACT_UP_TO:
        patterns = itertools.product((1, -1), repeat=n)
        hits = total = 0
        for signs in patterns:
            total += 1
            hits += abs(sum(s * d for s, d in zip(signs, diffs, strict=True))) >= observed
        return hits / total
    rng = random.Random(0)
    hits = sum(abs(sum(d if rng.random() < 0.5 else -d for d in diffs)) >= observed for _ in range(DRAWS))
    return (hits + 1) / (DRAWS + 1)


def compare(results: dict, a: str, b: str, setting: str = "target") -> dict:
    pairs = paired_cells(results, a, b, setting)
    if not pairs:
        raise ConfigError(f"{a!r} and {b!r} share no {setting} cell to compare")
    diffs = [x - y for _, x, y in pairs]
    return {
        "a": a,
        "b": b,
        "setting": setting,
        "pairs": len(pairs),
        "mean_a": statistics.mean(x for _, x, _ in pairs),
        "mean_b": statistics.mean(y for _, _, y in pairs),
        "mean_difference": statistics.mean(diffs),
        "wins": sum(d > 0 for d in diffs),
        "losses": sum(d < 0 for d in diffs),
        "ties": sum(d == 0 for d in diffs),
        "p": sign_flip_p(diffs),
    }


def compare_line(c: dict) -> str:
    return (
        f"{c['a']} vs {c['b']} ({c['setting']}, {c['pairs']} paired cells): "
        f"{100 * c['mean_a']:.1f} vs {100 * c['mean_b']:.1f}, difference {100 * c['mean_difference']:+.1f}; "
        f"{c['wins']} wins, {c['losses']} losses, {c['ties']} ties; sign-flip p = {c['p']:.3f}"
    )


_K_ROW = re.compile(r"^(?P<task>.+) \(k=(?P<k>\w+)\)$")


def few_shot_curves(results: dict) -> dict[str, dict[str, float]]:
    """method -> k -> mean target score over tasks and seeds (rows named "task (k=K)")."""
    curves: dict[str, dict[str, list[float]]] = {}
    for method, rows in results.get("target", {}).items():
        for row, cell in rows.items():
            if match := _K_ROW.match(row):
                curves.setdefault(method, {}).setdefault(match["k"], []).append(statistics.mean(_values(cell)))
    return {m: {k: statistics.mean(v) for k, v in ks.items()} for m, ks in curves.items()}


def plot_curves(results: dict, path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = few_shot_curves(results)
    if not curves:
        raise ConfigError("no few-shot rows (named 'task (k=K)') in the results")
    fig, ax = plt.subplots(figsize=(6, 4))
    ks = sorted({k for c in curves.values() for k in c}, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0))
    for method, points in curves.items():
        xs = [k for k in ks if k in points]
        ax.plot(xs, [100 * points[k] for k in xs], marker="o", label=method)
    ax.set_xlabel("k (shots)")
    ax.set_ylabel("mean target score × 100")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def load_results(path: str | Path) -> dict:
    return _load(Path(path))
