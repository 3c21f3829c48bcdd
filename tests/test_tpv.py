"""Task prompt vectors: one shared initialisation, TPV = prompt - init, arithmetic and the lambda search."""

import pytest
import torch

from talora.config import load_config
from talora.errors import ConfigError
from talora.methods.base import TargetContext
from talora.methods.tpv import TPV, TPVConfig, choose_lambdas
from talora.methods.tpv_math import apply_vectors, cosine_matrix

TASKS = ["a", "b", "c"]


def _trained(backbone, **kw) -> TPV:
    m = TPV(TPVConfig(length=3, **kw), backbone, TASKS)
    with torch.no_grad():
        m.tpv.copy_(torch.arange(3.0).view(3, 1, 1).expand_as(m.tpv) + 1)  # T_a = 1, T_b = 2, T_c = 3
    return m


def test_apply_vectors_is_init_plus_rescaled_sum():
    init, tpvs = torch.ones(2, 3), torch.stack([torch.full((2, 3), 2.0), torch.full((2, 3), -4.0)])
    assert torch.equal(apply_vectors(init, tpvs, [0.5, 0.25]), torch.full((2, 3), 1.0 + 1.0 - 1.0))
    with pytest.raises(ValueError, match="2 task prompt vectors but 1"):
        apply_vectors(init, tpvs, [1.0])


def test_cosine_matrix():
    got = cosine_matrix(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[2.0, 0.0], [0.0, -3.0]]))
    assert torch.allclose(got, torch.tensor([[1.0, 0.0], [2**-0.5, -(2**-0.5)]], dtype=torch.float64))


def test_every_task_starts_at_one_stored_initialisation(backbone):
    m = TPV(TPVConfig(length=4, init_seed=3), backbone, TASKS)
    prompts = m.prompt_inputs(torch.tensor([0, 2, 1])).input_prefix
    assert all(torch.equal(p, m.init) for p in prompts)
    emb = backbone.model.get_input_embeddings().weight
    assert all(any(torch.equal(row, e) for e in emb[:5000]) for row in m.init)  # vocabulary rows
    assert not torch.equal(TPV(TPVConfig(length=4, init_seed=4), backbone, TASKS).init, m.init)
    assert set(m.state_dict()) == {"init", "tpv"}  # the adapter holds the initialisation and the TPVs
    with torch.no_grad():
        m.tpv[1] += 0.5
    assert torch.allclose(m.prompts()[1] - m.init, m.tpvs()[1]) and torch.all(m.tpvs()[1] == 0.5)
    assert m.trainable_parameters()["per_task"] * 3 == sum(p.numel() for p in m.parameters())


def test_choose_lambdas_shared_then_each():
    want = (0.5, 1.0, 0.0)

    def score(lambdas):
        return -sum(abs(a - b) for a, b in zip(lambdas, want))

    grid = [1.0, 0.5, 0.0]
    assert choose_lambdas(score, 3, grid, each=False) == (0.5, 0.5, 0.5)  # distance 1.0, the best shared factor
    assert choose_lambdas(score, 3, grid, each=True) == want
    assert choose_lambdas(lambda _: 0.0, 2, grid, each=True) == (1.0, 1.0)  # ties: the grid's first factor


def test_target_starts_at_init_plus_weighted_sources(backbone):
    m = _trained(backbone, combine=["c", "a"], lambdas=[1.0, 0.5])
    seen = []

    def score(method):  # prefers the start whose mean is closest to 2.5 above the initialisation
        shift = (method.tpv[0].mean()).item()
        seen.append(shift)
        return -abs(shift - 2.5)

    target = m.for_target(TargetContext("new", backbone, score=score))
    # Shared factor: 1 gives 3 + 1 = 4 (off by 1.5), 0.5 gives 2 (off by 0.5): 0.5. Then per source:
    # c at 1 gives 3 + 0.5 = 3.5 (worse); a at 1 gives 1.5 + 1 = 2.5 (exact).
    assert target.state.lambdas == {"c": 0.5, "a": 1.0}
    assert torch.allclose(target.tpv[0], torch.full_like(target.tpv[0], 0.5 * 3 + 1.0 * 1))
    assert torch.equal(target.init, m.init) and target.task_names == ["new"]
    assert target.log_state() == {"lambdas": {"c": 0.5, "a": 1.0}}


def test_target_on_another_initialisation_and_without_sources(backbone):
    m = _trained(backbone, combine="all", lambdas=[1.0], target_init_seed=9, lr_target=0.0)
    target = m.for_target(TargetContext("new", backbone))  # one factor: nothing to score
    assert torch.equal(target.init, TPV(TPVConfig(length=3, init_seed=9), backbone, ["x"]).init)
    assert torch.all(target.tpv == 1 + 2 + 3)
    assert target.param_groups()[0]["lr"] == 0.0  # lr_target 0: the combination is evaluated as is
    plain = _trained(backbone, combine="none").for_target(TargetContext("new", backbone))
    assert torch.count_nonzero(plain.tpv) == 0 and plain.state.lambdas == {}


def test_bad_combinations_are_refused(backbone, tmp_path):
    with pytest.raises(ConfigError, match="unknown source task.*'zz'"):
        _trained(backbone, combine=["a", "zz"]).for_target(TargetContext("new", backbone))
    with pytest.raises(ConfigError, match="needs the target's shots"):
        _trained(backbone).for_target(TargetContext("new", backbone))
    path = tmp_path / "c.yaml"
    path.write_text("method: tpv\nmethod_args: {combine: some}\n")
    with pytest.raises(ConfigError, match="method_args: combine must be 'none', 'all' or a list"):
        load_config(path)
