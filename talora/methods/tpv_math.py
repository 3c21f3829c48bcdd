"""Task prompt vectors and DTVG's source grouping as pure tensor functions (no model needed).

A task prompt vector (TPV) is a tuned soft prompt minus its initialisation, an (m, d)
tensor of m token vectors (Belanec et al., eq. 2). Arithmetic adds rescaled TPVs to any
initialisation (their eq. 3-4). DTVG (Zhang et al.) compares two tasks by the dot product
of their token-averaged TPVs (eq. 2), scores a group of source tasks by its target
similarity TS (eq. 3) and knowledge consistency KC (eq. 4), chooses the group greedily
(Algorithm 2) and merges the group's rescaled TPVs into one prompt (eq. 6).

Groups are lists of source indices ordered by similarity to the target, highest first
(the order DTVG's Figure 7 uses).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

GROUPINGS = ("greedy", "ts_only", "kc_only", "target_only")
MAX_EXHAUSTIVE_SOURCES = 16  # kc_only searches all 2^S groups


def apply_vectors(init: torch.Tensor, tpvs: torch.Tensor, lambdas: Sequence[float]) -> torch.Tensor:
    """init + sum_i lambda_i * T_i: init (m, d), tpvs (n, m, d), one lambda per TPV."""
    if tpvs.shape[0] != len(lambdas):
        raise ValueError(f"{tpvs.shape[0]} task prompt vectors but {len(lambdas)} rescaling factors")
    weights = torch.tensor(list(lambdas), dtype=tpvs.dtype, device=tpvs.device)
    return init + torch.einsum("n,nmd->md", weights, tpvs)


def pooled(tpv: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:
    """(1/m) sum_i alpha_i v_i: the token average of a TPV rescaled token-wise by alpha.

    tpv (..., m, d), alpha (..., m) broadcastable against it; returns (..., d).
    """
    m = tpv.shape[-2]
    if alpha is None:
        return tpv.mean(dim=-2)
    return (alpha.unsqueeze(-2).to(tpv.dtype) @ tpv).squeeze(-2) / m


def similarity(t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
    """DTVG eq. 2: sim(T1, T2) = (1/m^2) (sum_i v_i^1)^T (sum_j v_j^2), over the last two dims."""
    return (pooled(t1) * pooled(t2)).sum(dim=-1)


def target_similarity(sim_to_target: Sequence[float], group: Sequence[int]) -> float:
    """DTVG eq. 3: mean similarity of the group's sources to the target (0 for an empty group)."""
    if not group:
        return 0.0
    return sum(float(sim_to_target[s]) for s in group) / len(group)


def knowledge_consistency(pair_sims: Sequence[Sequence[float]], group: Sequence[int]) -> float:
    """DTVG eq. 4: mean pairwise similarity within the group; 0 below two members."""
    n = len(group)
    if n < 2:
        return 0.0
    total = sum(float(pair_sims[a][b]) for a, b in itertools.combinations(group, 2))
    return 2.0 * total / (n * (n - 1))


def rank_by_similarity(sim_to_target: Sequence[float], allowed: Sequence[int]) -> list[int]:
    """Allowed source indices by similarity to the target, highest first (ties: lower index first)."""
    return sorted(allowed, key=lambda s: (-float(sim_to_target[s]), s))


def greedy_group(
    sim_to_target: Sequence[float], pair_sims: Sequence[Sequence[float]], allowed: Sequence[int]
) -> list[int]:
    """DTVG Algorithm 2: walk the similarity ranking and add a source when its similarity to the
    target is >= 0 and adding it does not lower the group's KC.

    A source that fails the test is skipped and the walk goes on (Algorithm 2), although
    the text of §3.3 says "until KC is no longer increasing".
    """
    group: list[int] = []
    consistency = 0.0
    for s in rank_by_similarity(sim_to_target, allowed):
        grown = knowledge_consistency(pair_sims, group + [s])
        if float(sim_to_target[s]) >= 0 and grown - consistency >= 0:
            group.append(s)
            consistency = grown
    return group


def nonnegative_group(sim_to_target: Sequence[float], allowed: Sequence[int]) -> list[int]:
    """The TS-only ablation: every source whose similarity to the target is >= 0."""
    return [s for s in rank_by_similarity(sim_to_target, allowed) if float(sim_to_target[s]) >= 0]


def max_consistency_group(pair_sims: Sequence[Sequence[float]], allowed: Sequence[int]) -> list[int]:
    """The KC-only ablation: the group with the highest KC among all subsets of the allowed sources.

    Ties (KC equal to within 1e-9) go to the larger group, then to the one with the
    lower source indices. Returned in index order; callers re-rank.
    """
    allowed = sorted(allowed)
    n = len(allowed)
    if n > MAX_EXHAUSTIVE_SOURCES:
        raise ValueError(f"kc_only searches all groups of {n} sources; at most {MAX_EXHAUSTIVE_SOURCES} are allowed")
    if n == 0:
        return []
    sims = torch.tensor([[float(pair_sims[a][b]) for b in allowed] for a in allowed], dtype=torch.float64)
    sims.fill_diagonal_(0.0)
    masks = ((torch.arange(2**n)[:, None] >> torch.arange(n)) & 1).to(torch.float64)  # (2^n, n)
    size = masks.sum(dim=1)
    pair_total = ((masks @ sims) * masks).sum(dim=1) / 2
    kc = torch.where(size >= 2, pair_total / (size * (size - 1) / 2).clamp(min=1), torch.zeros_like(size))
    best = kc.max()
    tied = torch.nonzero(torch.isclose(kc, best, rtol=0.0, atol=1e-9)).flatten().tolist()
    members = [[allowed[i] for i in range(n) if (code >> i) & 1] for code in tied]
    return min(members, key=lambda g: (-len(g), g))


def choose_group(
    strategy: str, sim_to_target: Sequence[float], pair_sims: Sequence[Sequence[float]], allowed: Sequence[int]
) -> list[int]:
    """The source group of one target under ``strategy`` (one of GROUPINGS), ranked by similarity."""
    if strategy == "greedy":
        return greedy_group(sim_to_target, pair_sims, allowed)
    if strategy == "ts_only":
        return nonnegative_group(sim_to_target, allowed)
    if strategy == "kc_only":
        return rank_by_similarity(sim_to_target, max_consistency_group(pair_sims, allowed))
    if strategy == "target_only":
        return []
    raise ValueError(f"grouping must be one of {GROUPINGS}, got {strategy!r}")


def merge(
    init: torch.Tensor,
    target: torch.Tensor,
    alpha_t: torch.Tensor,
    sources: torch.Tensor,
    alpha_s: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """DTVG eq. 6 for T targets at once: P_mix = P_init + alpha_t * T_t + sum_{s in S'} alpha_s * T_s.

    init (m, d); target (T, m, d) with alpha_t (T, m); sources (S, m, d) with alpha_s (T, S, m);
    mask (T, S) selects each target's group S'. The alphas scale token vectors.
    """
    own = alpha_t.unsqueeze(-1) * target
    weights = alpha_s * mask.to(alpha_s.dtype).unsqueeze(-1)  # (T, S, m): zero outside the group
    borrowed = torch.einsum("tsm,smd->tmd", weights, sources)
    return init + own + borrowed


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every row of a (n, d) with every row of b (k, d): (n, k)."""
    a = torch.nn.functional.normalize(a.double(), dim=-1)
    b = torch.nn.functional.normalize(b.double(), dim=-1)
    return a @ b.T
