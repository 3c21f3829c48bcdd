"""Reading sweep results: the paired sign-flip test and the few-shot curves."""

import itertools
import json

import pytest

from talora.analysis import sweep_results as R
from talora.cli import main
from talora.errors import ConfigError

RESULTS = {
    "source": {"a": {"s1": 0.8}, "b": {"s1": 0.7}},
    "target": {
        "zero_shot": {"t (k=16)": [0.5], "t (k=32)": [0.5]},
        "a": {"t (k=16)": [0.6, 0.7, 0.8], "t (k=32)": [0.7, 0.8, 0.9]},
        "b": {"t (k=16)": [0.5, 0.7, 0.6], "t (k=32)": [0.6, 0.7, 0.6]},
    },
}


def _brute_force_p(diffs):
    observed = abs(sum(diffs))
    flips = [abs(sum(s * d for s, d in zip(signs, diffs))) for signs in itertools.product((1, -1), repeat=len(diffs))]
    return sum(f >= observed - 1e-12 for f in flips) / len(flips)


def test_compare_pairs_cells_and_tests_by_sign_flips():
    c = R.compare(RESULTS, "a", "b")
    diffs = [0.1, 0.0, 0.2, 0.1, 0.1, 0.3]
    assert (c["pairs"], c["wins"], c["losses"], c["ties"]) == (6, 5, 0, 1)
    assert c["mean_difference"] == pytest.approx(sum(diffs) / 6)
    assert c["p"] == pytest.approx(_brute_force_p(diffs)) == pytest.approx(2 / 32)  # only all-plus and all-minus
    zero = R.compare(RESULTS, "a", "zero_shot")  # one zero-shot score per row, paired with every seed
    assert zero["pairs"] == 6 and zero["mean_b"] == pytest.approx(0.5)
    assert R.compare(RESULTS, "a", "b", "source")["pairs"] == 1


def test_sign_flip_is_symmetric_and_large_samples_draw():
    assert R.sign_flip_p([0.1, -0.1]) == 1.0
    many = [0.05] * 30
    assert R.sign_flip_p(many) < 0.001 and R.sign_flip_p([-d for d in many]) < 0.001


def test_compare_refuses_unknown_methods():
    with pytest.raises(ConfigError, match="no method 'c' in the target scores; there are: zero_shot, a, b"):
        R.compare(RESULTS, "a", "c")


def test_curves_average_tasks_and_seeds_per_k(tmp_path):
    curves = R.few_shot_curves(RESULTS)
    assert curves["a"] == {"16": pytest.approx(0.7), "32": pytest.approx(0.8)}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(RESULTS))
    out = tmp_path / "curves.png"
    assert main(["analyze", "curves", str(path), "--output", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert main(["analyze", "compare", str(path), "a", "b", "--json"]) == 0
    path.write_text("{not json")
    assert main(["analyze", "compare", str(path), "a", "b"]) == 2
