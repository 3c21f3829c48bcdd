"""TA-LoRA and the prompt baselines on tiny random models: formulas, gathers, parameter groups."""

import pytest
import torch
import torch.nn.functional as F
from conftest import FAMILIES, make_backbone

from talora.core.batching import Encoded, answer_batch
from talora.core.forward import answer_loss, hidden_at
from talora.core.predict import Verbalizer, predict
from talora.methods.base import TargetContext
from talora.methods.deep_prompt_tuning import DeepPromptTuning, DeepPromptTuningConfig
from talora.methods.prompt_tuning import PromptTuning, PromptTuningConfig
from talora.methods.talora import TALoRA, TALoRAConfig

TASKS = ["a", "b", "c"]


def _talora(backbone, **kw):
    m = TALoRA(TALoRAConfig(length=4, rank=3, **kw), backbone, TASKS)
    with torch.no_grad():  # leave the zero initialisation so every term is exercised
        m.u.normal_()
        m.gates.fill_(0.4)
    return m


def _items(n=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [
        Encoded(
            f"x{i}",
            i % 3,
            tuple(torch.randint(2, 300, (5 + i,), generator=gen).tolist()),
            tuple(torch.randint(2, 300, (1 + i % 2,), generator=gen).tolist()),
            "l",
        )
        for i in range(n)
    ]


def test_talora_prompt_is_theta0_plus_scaled_low_rank(backbone):
    m = _talora(backbone, scale=0.7)
    ids = torch.tensor([2, 0, 2])
    got = m.task_prompts(ids)
    for layer in range(m.layers):
        for row, t in enumerate(ids.tolist()):
            a = torch.outer(m.u[layer, t], m.v[layer, t])  # A_t = u v^T, (r, d)
            want = m.theta0[layer] + 0.7 * m.B[layer] @ a
            assert torch.allclose(got[layer, row], want, atol=1e-5)


def test_unshared_b_ablation_uses_each_tasks_own_b(backbone):
    m = _talora(backbone, shared_b=False)
    assert m.B.shape[1] == len(TASKS)
    got = m.task_prompts(torch.tensor([1]))
    want = m.theta0[0] + m.B[0, 1] @ torch.outer(m.u[0, 1], m.v[0, 1])
    assert torch.allclose(got[0, 0], want, atol=1e-5)


def _naive_orthogonality(form, us, vs, pairs):
    """Sum over layers and the given (i, j) pairs of ||A_i A_j^T||_F^2 ("a") or ||A_i^T A_j||_F^2
    ("u"), A_t = u_t v_t^T built as an explicit r x d matrix; ``us``/``vs`` index [layer][task]."""
    total = 0.0
    for layer in range(len(us)):
        for i, j in pairs:
            a_i = torch.outer(us[layer][i], vs[layer][i])
            a_j = torch.outer(us[layer][j], vs[layer][j])
            product = a_i @ a_j.T if form == "a" else a_i.T @ a_j
            total += product.pow(2).sum()
    return total


@pytest.mark.parametrize("form", ["a", "u"])
def test_orthogonality_regulariser_equals_its_definition(backbone, form):
    m = _talora(backbone, lambda_orth=0.5, orthogonality=form)
    with torch.no_grad():
        m.v.normal_()
    pairs = [(i, j) for i in range(len(TASKS)) for j in range(i + 1, len(TASKS))]
    want = 0.5 * _naive_orthogonality(form, m.u, m.v, pairs)
    assert torch.allclose(m.regularization(), want, rtol=1e-4)


def test_prompt_units_make_the_regulariser_blind_to_the_models_norm_scale():
    """With ``orthogonality_units: prompt`` the term is the raw one over rho_l^4 per layer, rho_l the
    RMS of the layer's initial prompts; so a model whose normed inputs are c times larger (prompts
    and A_i c times larger) gets the same term, where the raw one grows c^4."""
    c = 7.0
    small, large = make_backbone("llama"), make_backbone("llama")
    with torch.no_grad():
        for layer in large.model.get_decoder().layers:
            layer.input_layernorm.weight.mul_(c)
    terms = {}
    for name, bb in (("small", small), ("large", large)):
        for units in ("raw", "prompt"):
            m = _talora(bb, lambda_orth=0.5, orthogonality_units=units)
            with torch.no_grad():
                m.u.copy_(torch.arange(m.u.numel(), dtype=torch.float32).reshape(m.u.shape).cos())
                m.v.copy_(torch.arange(m.v.numel(), dtype=torch.float32).reshape(m.v.shape).sin())
                if name == "large":
                    m.v.mul_(c)  # A_i = u_i v_i^T scales with the prompts
            terms[name, units] = m
    raw, prompt = terms["small", "raw"], terms["small", "prompt"]
    rho = raw.theta0.detach().pow(2).mean(dim=(1, 2)).sqrt()
    assert torch.allclose(prompt.prompt_rms, rho) and not torch.allclose(rho, torch.ones_like(rho))
    per_layer = raw._pair_terms(raw.u, raw.v, raw.u, raw.v).triu(diagonal=1).sum(dim=(1, 2))
    assert torch.allclose(prompt.regularization(), 0.5 * (per_layer / rho**4).sum(), rtol=1e-4)
    assert torch.allclose(terms["large", "raw"].regularization(), c**4 * raw.regularization(), rtol=1e-3)
    assert torch.allclose(terms["large", "prompt"].regularization(), prompt.regularization(), rtol=1e-3)


def test_orthogonality_units_must_be_known():
    with pytest.raises(ValueError, match="orthogonality_units"):
        TALoRAConfig(orthogonality_units="cm")


def test_a_form_is_zero_for_orthogonal_task_directions_whatever_u(backbone):
    """With more tasks than the rank (3 > 2) the "a" form still reaches zero with every task's
    low-rank part non-zero: it needs the directions v orthogonal, not the coordinates u."""
    m = TALoRA(TALoRAConfig(length=4, rank=2, orthogonality="a"), backbone, TASKS)
    with torch.no_grad():
        m.u.normal_()
        m.v.zero_()
        for t in range(len(TASKS)):
            m.v[:, t, t] = 2.0
    assert m.regularization().item() == 0.0
    u_form = TALoRA(TALoRAConfig(length=4, rank=2, orthogonality="u"), backbone, TASKS)
    u_form.load_state_dict(m.state_dict())
    assert u_form.regularization().item() > 0


@pytest.mark.parametrize("form", ["a", "u"])
def test_transfer_regulariser_pairs_the_target_with_the_frozen_sources(backbone, form):
    m = _talora(backbone, lambda_orth=0.5, orthogonality=form)
    target = m.for_target(TargetContext("new", backbone))
    with torch.no_grad():
        target.u.normal_()  # a target starts at u = 0, where the term and its gradient vanish
    reg = target.regularization()
    us = [torch.cat([m.u[layer], target.u[layer]]) for layer in range(m.layers)]
    vs = [torch.cat([m.v[layer], target.v[layer]]) for layer in range(m.layers)]
    want = 0.5 * _naive_orthogonality(form, us, vs, [(len(TASKS), j) for j in range(len(TASKS))])
    assert reg.item() > 0 and torch.allclose(reg, want, rtol=1e-4)
    reg.backward()
    got_grad = {n for n, p in target.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert got_grad == {"u", "v"}
    assert not target.source_u.requires_grad and not target.source_v.requires_grad
    assert all(p.grad is None for p in m.parameters())  # the sources are copies, not views of m
    assert "source_u" not in target.state_dict()  # training reads them; adapters do not carry them


def test_talora_parameter_groups_and_ablations(backbone):
    lrs = {g["name"]: g["lr"] for g in _talora(backbone).param_groups()}
    assert lrs == {"theta0": 1e-3, "B": 1e-3, "uv": 3e-2, "gate": 1e-2}
    target = {g["name"]: g["lr"] for g in _talora(backbone).for_target(TargetContext("t", backbone)).param_groups()}
    assert target == {"uv": 0.1}
    same = {g["name"]: g["lr"] for g in _talora(backbone, same_lr=True).param_groups()}
    assert same["theta0"] == same["B"] == same["uv"] == 3e-2
    plain = {g["name"] for g in _talora(backbone, attention="plain").param_groups()}
    assert "gate" not in plain


@pytest.mark.parametrize("make", ["talora", "deep", "input"])
def test_mixed_task_batch_equals_one_task_at_a_time(backbone, make):
    """The gather by task id makes each row's output independent of the other rows' tasks."""
    if make == "talora":
        m = _talora(backbone)
    elif make == "deep":
        m = DeepPromptTuning(DeepPromptTuningConfig(length=4), backbone, TASKS)
        with torch.no_grad():
            m.gates.normal_()
    else:
        m = PromptTuning(PromptTuningConfig(length=4), backbone, TASKS)
    items = _items()
    pad = backbone.tokenizer.pad_token_id
    with torch.no_grad():
        mixed = hidden_at(backbone, m, answer_batch(items, pad))
        alone = torch.cat([hidden_at(backbone, m, answer_batch([e], pad)) for e in items])
    assert torch.allclose(mixed, alone, atol=1e-5)


def test_answer_loss_equals_full_logits_cross_entropy(backbone):
    m = PromptTuning(PromptTuningConfig(length=3), backbone, TASKS)
    items = _items()
    batch = answer_batch(items, backbone.tokenizer.pad_token_id)
    with torch.no_grad():
        embeds = torch.cat([m.prompt[batch.task_ids], backbone.model.get_input_embeddings()(batch.input_ids)], 1)
        mask = torch.cat([torch.ones(len(items), 3, dtype=torch.long), batch.attention_mask], 1)
        logits = backbone.model(inputs_embeds=embeds, attention_mask=mask).logits
        want = F.cross_entropy(logits[batch.rows, batch.cols + 3], batch.targets)
        assert torch.allclose(answer_loss(backbone, m, batch), want, atol=1e-5)


def _reference_scores(backbone, m, e, words):
    """Sum of log-probabilities of each label word after the prompt, from the model's full logits."""
    scores = []
    for w in words:
        ids = torch.tensor([list(e.prompt) + list(w)])
        prompts = m.prompt_inputs(torch.tensor([e.task_id])).layer_prompts
        with torch.no_grad():
            logp = backbone.model(input_ids=ids, talora_prompts=prompts).logits[0].log_softmax(-1)
        scores.append(sum(logp[len(e.prompt) - 1 + j, t].item() for j, t in enumerate(w)))
    return scores


@pytest.mark.parametrize("words", [((40,), (41,), (42,)), ((40,), (41, 43), (42, 44, 45))])
def test_label_ranking_matches_full_logits(backbone, words):
    m = _talora(backbone)
    verb = Verbalizer(("p", "q", "r"), words)
    items = _items(9)
    preds = predict(backbone, m, items, {t: verb for t in range(3)})
    for e, pred in zip(items, preds):
        scores = _reference_scores(backbone, m, e, words)
        assert pred == verb.labels[max(range(3), key=scores.__getitem__)]


def test_for_target_freezes_shared_knowledge(backbone):
    m = _talora(backbone)
    target = m.for_target(TargetContext("new", backbone))
    assert target.task_names == ["new"]
    assert torch.equal(target.theta0, m.theta0) and torch.equal(target.B, m.B)
    trainable = {n for n, p in target.named_parameters() if p.requires_grad}
    assert trainable == {"u", "v"}
    assert torch.count_nonzero(target.u) == 0  # starts exactly at the shared prompt theta0


def test_init_from_stage1_takes_the_mean_prompt(backbone):  # theta0 and gates, whatever init_lowrank
    stage1 = DeepPromptTuning(DeepPromptTuningConfig(length=4), backbone, TASKS)
    with torch.no_grad():
        stage1.gates.normal_()
    m = TALoRA(TALoRAConfig(length=4), backbone, TASKS)
    m.init_from_stage1(stage1)
    assert torch.allclose(m.theta0, stage1.prompts.mean(1))
    assert torch.allclose(m.gates, stage1.gates.mean(0))


def test_trainable_parameter_counts(backbone):
    m = TALoRA(TALoRAConfig(length=4, rank=3), backbone, TASKS)
    counts = m.trainable_parameters()
    L, d, H = m.layers, backbone.hidden_size, backbone.model.config.num_attention_heads
    assert counts == {"shared": L * 4 * d + L * 4 * 3 + L * H, "per_task": L * (3 + d)}
    assert counts["shared"] + 3 * counts["per_task"] == sum(p.numel() for p in m.parameters())


def test_svd_init_fits_the_stage1_prompts_best_within_the_structure(backbone):
    stage1 = DeepPromptTuning(DeepPromptTuningConfig(length=4), backbone, TASKS)
    m = TALoRA(TALoRAConfig(length=4, rank=2, scale=0.5), backbone, TASKS)
    m.init_from_stage1(stage1)
    target = stage1.prompts.transpose(0, 1)  # (T, L, m, d)
    fitted = torch.stack([m.task_prompts(torch.tensor([t]))[:, 0] for t in range(len(TASKS))])
    zero = TALoRA(TALoRAConfig(length=4, rank=2, init_lowrank="zero"), backbone, TASKS)
    zero.init_from_stage1(stage1)
    at_mean = torch.stack([zero.task_prompts(torch.tensor([t]))[:, 0] for t in range(len(TASKS))])
    assert torch.allclose(at_mean, m.theta0.expand_as(at_mean))  # "zero" starts every task at theta0
    assert (fitted - target).norm() < 0.9 * (at_mean - target).norm()
    assert torch.allclose(m.B.transpose(1, 2) @ m.B, torch.eye(2).expand(m.layers, 2, 2), atol=1e-5)


def _best_rank1_in(basis, deviation):
    """The best rank-1 approximation of ``deviation`` projected onto the columns of ``basis``."""
    U, S, Vh = torch.linalg.svd(basis @ basis.T @ deviation)
    return S[0] * torch.outer(U[:, 0], Vh[0])


@pytest.mark.parametrize("shared_b", [True, False])
def test_svd_init_equals_the_naive_best_fit_with_and_without_a_shared_b(backbone, shared_b):
    """The "w/o fast & slow weights" ablation starts from the same kind of fit as the full model:
    its basis is each task's own top-r left singular vectors instead of all tasks' together."""
    stage1 = DeepPromptTuning(DeepPromptTuningConfig(length=4), backbone, TASKS)
    m = TALoRA(TALoRAConfig(length=4, rank=2, scale=0.5, shared_b=shared_b), backbone, TASKS)
    m.init_from_stage1(stage1)
    for layer in range(m.layers):
        devs = [stage1.prompts[layer, t] - m.theta0[layer] for t in range(len(TASKS))]
        shared_basis = torch.linalg.svd(torch.cat(devs, dim=1)).U[:, :2]
        for t, dev in enumerate(devs):
            basis = shared_basis if shared_b else torch.linalg.svd(dev).U[:, :2]
            got = m.task_prompts(torch.tensor([t]))[layer, 0] - m.theta0[layer]
            assert torch.allclose(got, _best_rank1_in(basis, dev), atol=1e-4)
            if not shared_b:  # its own top-2 basis keeps the deviation's best rank-1 fit whole
                assert torch.allclose(got, _best_rank1_in(torch.eye(4), dev), atol=1e-4)


def test_ranking_in_a_batch_mixing_tasks_with_different_label_counts(backbone):
    m = _talora(backbone)
    verbs = {
        0: Verbalizer(("p", "q"), ((40,), (41,))),
        1: Verbalizer(("x", "y", "z"), ((50,), (51,), (52,))),
        2: Verbalizer(("p", "q"), ((40,), (41,))),
    }
    items = _items(9)
    mixed = predict(backbone, m, items, verbs)
    alone = [predict(backbone, m, [e], verbs)[0] for e in items]
    assert mixed == alone
    assert all(p in verbs[e.task_id].labels for p, e in zip(mixed, items))


@pytest.mark.parametrize("family", FAMILIES)
def test_soft_prompts_start_on_the_scale_the_model_sees(family):
    """A vocabulary-initialised prompt is embed_tokens(ids), scale included (Gemma multiplies by
    sqrt(hidden_size) inside embed_tokens): as an input prefix it IS those tokens to the model, and a
    deep prompt starts as their normalised embeddings."""
    backbone = make_backbone(family)
    embed = backbone.model.get_input_embeddings()
    m = PromptTuning(PromptTuningConfig(length=4, init_vocab=50, init_seed=7), backbone, TASKS)
    ids = torch.randint(0, 50, (len(TASKS), 4), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert torch.equal(m.prompt, embed(ids))
        if family == "gemma3":
            scale = torch.tensor(backbone.hidden_size**0.5)
            assert torch.equal(m.prompt, embed.weight[ids] * scale) and not torch.allclose(m.prompt, embed.weight[ids])
        for e in _items(3):
            got = hidden_at(backbone, m, answer_batch([e], backbone.tokenizer.pad_token_id))
            tokens = torch.tensor([ids[e.task_id].tolist() + list(e.prompt) + list(e.answer)])
            full = backbone.model.get_decoder()(input_ids=tokens).last_hidden_state[0]
            start = ids.shape[1] + len(e.prompt) - 1  # the positions that predict the answer tokens
            torch.testing.assert_close(got, full[start : start + len(e.answer)], atol=1e-5, rtol=1e-5)
    deep = DeepPromptTuning(DeepPromptTuningConfig(length=4, layers=2, init_vocab=50, init_seed=7), backbone, TASKS)
    deep_ids = torch.randint(0, 50, (2, len(TASKS), 4), generator=torch.Generator().manual_seed(7))
    layers = backbone.model.get_decoder().layers
    with torch.no_grad():
        for i in range(2):
            want = layers[deep.first_layer + i].input_layernorm(embed(deep_ids[i]))
            assert torch.equal(deep.prompts[i], want)
