"""DTVG: similarity, TS, KC and Algorithm 2 on hand-made vectors; the merge; regrouping as the target moves."""

import pytest
import torch

from talora.errors import ConfigError
from talora.methods.base import TargetContext
from talora.methods.dtvg import DTVG, DTVGConfig, DTVGState
from talora.methods.tpv import TPV, TPVConfig
from talora.methods.tpv_math import (
    choose_group,
    greedy_group,
    knowledge_consistency,
    max_consistency_group,
    merge,
    nonnegative_group,
    pooled,
    similarity,
    target_similarity,
)


def test_similarity_is_the_dot_product_of_token_sums_over_m_squared():
    t1 = torch.tensor([[1.0, 0.0], [3.0, 0.0]])  # token sum (4, 0)
    t2 = torch.tensor([[0.0, 1.0], [2.0, 1.0]])  # token sum (2, 2)
    assert similarity(t1, t2).item() == pytest.approx(4 * 2 / 2**2)
    assert similarity(t1, t1).item() == pytest.approx(16 / 4)
    alpha = torch.tensor([1.0, 0.0])  # token-level rescaling drops the second token: (1, 0) / 2
    assert pooled(t1, alpha).tolist() == [0.5, 0.0]


def test_target_similarity_and_knowledge_consistency():
    sims = [2.0, -1.0, 0.5]
    assert target_similarity(sims, [0, 2]) == pytest.approx(1.25)
    assert target_similarity(sims, []) == 0.0
    pair = [[9, 1, -2], [1, 9, 4], [-2, 4, 9]]  # the diagonal is never read
    assert knowledge_consistency(pair, [0, 1, 2]) == pytest.approx((1 - 2 + 4) / 3)
    assert knowledge_consistency(pair, [1, 2]) == pytest.approx(4)
    assert knowledge_consistency(pair, [2]) == 0.0  # below two members KC is 0 (eq. 4)


PAIR = [[0, 1, -2, 2], [1, 0, 0, 2], [-2, 0, 0, 5], [2, 2, 5, 0]]


def test_greedy_grouping_follows_algorithm_2():
    # Ranking 0, 1, 2, 3. s0 joins (KC 0 -> 0); s1 joins (KC 1); s2 would drop KC to (1-2+0)/3 and is
    # skipped, but the walk goes on: s3 raises KC to (1+2+2)/3 and joins.
    assert greedy_group([3.0, 2.0, 1.0, 0.5], PAIR, range(4)) == [0, 1, 3]
    # A negative similarity to the target keeps s3 out even though it would raise KC.
    assert greedy_group([3.0, 2.0, 1.0, -0.5], PAIR, range(4)) == [0, 1]
    # sim = 0 is allowed (>= 0); the ranking, not the index, decides the order.
    assert greedy_group([0.0, 2.0, -1.0, -1.0], PAIR, range(4)) == [1, 0]
    # A source conflicting with the group (pair sim < 0) is refused; a later one still joins.
    assert greedy_group([3.0, 1.0, 2.0, -1.0], PAIR, range(4)) == [0, 1]
    assert greedy_group([3.0, 2.0, 1.0, 0.5], PAIR, [1, 2]) == [1, 2]  # only allowed sources


def test_ablation_groupings():
    sims = [3.0, -2.0, 0.0, 1.0]
    assert nonnegative_group(sims, range(4)) == [0, 3, 2]
    assert max_consistency_group(PAIR, range(4)) == [2, 3]  # the best pair: 5
    assert max_consistency_group(PAIR, [0, 1]) == [0, 1]
    # KC ties (all pairs 1): the larger group wins.
    ones = [[1.0] * 3 for _ in range(3)]
    assert max_consistency_group(ones, range(3)) == [0, 1, 2]
    assert choose_group("kc_only", sims, PAIR, range(4)) == [3, 2]  # ranked by similarity to the target
    assert choose_group("target_only", sims, PAIR, range(4)) == []
    with pytest.raises(ValueError, match="grouping must be one of"):
        choose_group("best", sims, PAIR, range(4))


def test_merge_equals_the_formula():
    gen = torch.Generator().manual_seed(0)
    T, S, m, d = 2, 3, 4, 5
    init, target, sources = (
        torch.randn(m, d, generator=gen),
        torch.randn(T, m, d, generator=gen),
        torch.randn(S, m, d, generator=gen),
    )
    alpha_t, alpha_s = torch.rand(T, m, generator=gen), torch.rand(T, S, m, generator=gen)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    got = merge(init, target, alpha_t, sources, alpha_s, mask)
    for t in range(T):
        want = init.clone()
        for i in range(m):
            want[i] += alpha_t[t, i] * target[t, i]
            for s in range(S):
                if mask[t, s]:
                    want[i] += alpha_s[t, s, i] * sources[s, i]
        assert torch.allclose(got[t], want, atol=1e-6)


SOURCES = ["s0", "s1", "s2"]


def _dtvg_target(backbone, **kw) -> DTVG:
    """A target method over three hand-made source TPVs along orthogonal directions."""
    m = DTVG(DTVGConfig(length=2, **kw), backbone, ["t"], DTVGState(sources=SOURCES))
    d = m.hidden
    with torch.no_grad():
        for s in range(3):
            m.source_tpvs[s, :, s] = 1.0  # s0 along e0, s1 along e1, s2 along e2: pairwise sims 0
        m.source_tpvs[2, :, 0] = -0.5  # s2 conflicts a little with s0 (pair sim -0.5)
        m.tpv[0, :, 0] = 1.0  # the target starts along s0
    m.fix_groups()
    assert d > 3
    return m


def _moved_target_groups(m: DTVG) -> list[list[str]]:
    seen = [m.log_state()["group"]["t"]]
    with torch.no_grad():
        m.tpv.zero_()
        m.tpv[0, :, 2] = 1.0  # the target now points along s2 (and a little along s1), away from s0
        m.tpv[0, :, 1] = 0.5
    m.prompt_inputs(torch.tensor([0]))
    seen.append(m.log_state()["group"]["t"])
    return seen


def test_regrouping_follows_the_target_vector(backbone):
    m = _dtvg_target(backbone)
    # sims to the target: s0 1, s1 0, s2 -0.5. s0 first, then s1 (KC 0 -> 0); s2 is negative: out.
    before, after = _moved_target_groups(m)
    assert before == ["s0", "s1"]
    # sims: s2 1, s1 0.5, s0 0. s2 first, s1 joins (KC 0), s0 would lower KC to -0.5/3: skipped.
    assert after == ["s2", "s1"]
    merged = m.prompt_inputs(torch.tensor([0, 0])).input_prefix
    want = m.init + m.tpv[0] + m.source_tpvs[2] + m.source_tpvs[1]  # alphas are all ones
    assert torch.allclose(merged[1], want, atol=1e-6)


def test_fixed_group_ablation_keeps_the_first_group(backbone):
    m = _dtvg_target(backbone, dynamic=False)
    assert _moved_target_groups(m) == [["s0", "s1"], ["s1", "s0"]]  # same members, re-ranked


def test_alphas_rescale_before_similarity(backbone):
    m = _dtvg_target(backbone, grouping="ts_only")
    with torch.no_grad():
        m.alpha_s[0, 0] = -1.0  # s0 rescaled by -1 now points against the target
    groups, sims = m.groups()
    assert sims[0, 0].item() == pytest.approx(-1.0) and groups == [[1]]  # s2's sim is -0.5


def test_a_task_never_borrows_its_own_vector(backbone):
    m = DTVG(DTVGConfig(length=2), backbone, SOURCES)
    with torch.no_grad():
        m.source_tpvs.copy_(torch.ones_like(m.source_tpvs))
        m.tpv.copy_(m.source_tpvs)
    groups, _ = m.groups()
    assert groups == [[1, 2], [0, 2], [0, 1]]


def test_gradients_reach_only_the_grouped_scales(backbone):
    m = _dtvg_target(backbone)
    m.prompt_inputs(torch.tensor([0])).input_prefix.sum().backward()
    grad = m.alpha_s.grad[0].abs().sum(dim=1)
    assert grad[0] > 0 and grad[1] > 0 and grad[2] == 0  # group {s0, s1}
    assert m.tpv.grad.abs().sum() > 0 and m.alpha_t.grad.abs().sum() > 0


def test_stage1_init_and_target(backbone):
    m = DTVG(DTVGConfig(length=3, init_seed=5), backbone, SOURCES)
    stage1 = m.stage1(backbone)
    assert isinstance(stage1, TPV) and torch.equal(stage1.init, m.init)
    with torch.no_grad():
        stage1.tpv.normal_()
    m.init_from_stage1(stage1)
    assert torch.equal(m.source_tpvs, stage1.tpv) and torch.equal(m.tpv, stage1.tpv)

    tuned = []

    def tune(method, steps):  # stands in for training on the shots
        tuned.append((type(method).__name__, steps, torch.equal(method.init, m.init)))
        with torch.no_grad():
            method.tpv.fill_(0.25)

    target = m.for_target(TargetContext("new", backbone, tune=tune))
    assert tuned == [("TPV", 30, True)]
    assert target.state.sources == SOURCES and target.stage1(backbone) is None
    assert torch.equal(target.source_tpvs, m.source_tpvs) and torch.all(target.tpv == 0.25)
    assert {g["name"]: g["lr"] for g in target.param_groups()} == {"target": 3e-2, "source_alpha": 4e-2}
    counts = target.trainable_parameters()
    assert counts == {"shared": 0, "per_task": 3 * m.hidden + 3 + 3 * 3}
    assert counts["per_task"] == sum(p.numel() for p in target.parameters())
    with pytest.raises(ConfigError, match="target_tpv_steps"):
        m.for_target(TargetContext("new", backbone))


def test_stage1_of_another_shape_is_refused(backbone):
    m = DTVG(DTVGConfig(length=3), backbone, SOURCES)
    with pytest.raises(ConfigError, match="do not match"):
        m.init_from_stage1(TPV(TPVConfig(length=4), backbone, SOURCES))
