"""The papers' baselines as methods, on tiny random models: each trains only itself, leaves the shared
backbone bit-identical, does what defines it, and round-trips through adapter files."""

import pytest
import torch

from talora.adapters.files import load_adapter, save_adapter
from talora.config import TrainConfig
from talora.core.batching import Encoded, answer_batch
from talora.methods import METHODS
from talora.methods.base import TargetContext
from talora.tasks import load_tasks
from talora.training.trainer import train

# Synthetic-suite names, so that adapter files can carry the tasks' specs.
TASKS = ["movie_sentiment", "news_topic", "emotion"]
SMALL = {
    "spot": {"length": 4},
    "spot_retrieval": {"length": 4, "probe_steps": 2},
    "attempt": {"length": 4},
    "mpt": {"length": 4},
    "lora": {"rank": 2},
    "adapter": {"bottleneck": 8},
    "bitfit": {},
    "full_finetune": {"lr": 1e-3},
    "prompt_tuning": {"length": 4},
    "deep_prompt_tuning": {"length": 4, "layers": 2},
}
NAMES = list(SMALL)


def build(name, backbone, tasks=TASKS, **kw):
    """The method as the pipeline builds it, stage 1 (untrained) included."""
    cls = METHODS[name]
    method = cls(cls.config_cls(**{**SMALL[name], **kw}), backbone, tasks)
    if (stage1 := method.stage1(backbone)) is not None:
        method.init_from_stage1(stage1)
    return method


def items(n=12, seed=0, tasks=3):
    gen = torch.Generator().manual_seed(seed)
    return [
        Encoded(
            f"x{i}",
            i % tasks,
            tuple(torch.randint(2, 300, (5 + i % 4,), generator=gen).tolist()),
            tuple(torch.randint(2, 300, (1 + i % 2,), generator=gen).tolist()),
            "l",
        )
        for i in range(n)
    ]


def fit(method, backbone, out, steps=3, data=None):
    cfg = TrainConfig(steps=steps, batch_size=4, warmup_steps=0, eval_every=0, log_every=1)
    train(backbone, method, data or items(), [], {}, {}, cfg, out, seed=0)


@torch.no_grad()
def logits(backbone, method=None, batch=None):
    """Full logits of the model as it stands (inside the method's ``applied`` when one is given)."""
    batch = batch or answer_batch(items(4, seed=1), backbone.tokenizer.pad_token_id)
    if method is None:
        return backbone.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    with method.applied(backbone):
        return backbone.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits


def _context(task, backbone, tune=None):
    return TargetContext(task, backbone, tune)


def snapshot(backbone):
    model = backbone.model
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [id(p) for p in model.parameters()],
        [id(m) for m in model.modules()],
        backbone.fingerprint,
    )


def assert_untouched(backbone, before):
    tensors, params, modules, fingerprint = before
    after = backbone.model.state_dict()
    assert after.keys() == tensors.keys()
    for k, v in tensors.items():
        assert torch.equal(after[k], v), k
    assert [id(p) for p in backbone.model.parameters()] == params  # the very same parameter objects
    assert [id(m) for m in backbone.model.modules()] == modules
    assert backbone.fingerprint == fingerprint
    assert not any(m._forward_hooks for m in backbone.model.modules())


# (1) Every method: its trainable tensors move, the backbone does not, outside ``applied`` the model is frozen.


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_training_moves_the_method_and_never_the_backbone(tmp_path, family, name):
    from conftest import make_backbone

    backbone = make_backbone(family)
    before, frozen_logits = snapshot(backbone), logits(backbone)
    method = build(name, backbone)
    start = {k: p.detach().clone() for k, p in method.named_parameters() if p.requires_grad}
    assert start and set(start) <= set(method.state_dict())
    fit(method, backbone, tmp_path)
    for k, p in method.named_parameters():
        if k in start:
            assert not torch.equal(p, start[k]), f"{name}: {k} did not move"
    assert_untouched(backbone, before)
    assert torch.equal(logits(backbone), frozen_logits)


@pytest.mark.parametrize("name", ["lora", "adapter", "bitfit", "full_finetune"])
def test_weight_methods_change_the_model_only_inside_applied(tmp_path, backbone, name):
    frozen = logits(backbone)
    trained, other = build(name, backbone), build(name, backbone)
    fit(trained, backbone, tmp_path)
    assert not torch.allclose(logits(backbone, trained), frozen)
    assert torch.equal(logits(backbone, other), frozen)  # a second instance never sees the first one's weights
    assert torch.equal(logits(backbone), frozen)
    assert trained.frozen_below == 0


# (2) What defines each method.


def test_spot_shares_one_prompt_and_a_target_starts_from_it(backbone):
    m = build("spot", backbone)
    prefix = m.prompt_inputs(torch.tensor([0, 2, 1])).input_prefix
    assert all(torch.equal(prefix[i], m.prompt) for i in range(3))
    target = m.for_target(_context("product_sentiment", backbone))
    assert target.task_names == ["product_sentiment"] and torch.equal(target.prompt, m.prompt)
    assert target.prompt.requires_grad and target.prompt.data_ptr() != m.prompt.data_ptr()


def test_spot_retrieval_starts_the_target_at_the_most_similar_source(backbone):
    m = build("spot_retrieval", backbone)
    d = backbone.hidden_size
    e1, e2 = torch.eye(d)[0], torch.eye(d)[1]
    with torch.no_grad():  # task embeddings (token means): +e1, +e2, -e1; token 0 varies, the mean does not
        for t, direction in enumerate((e1, e2, -e1)):
            m.prompt[t] = direction
            m.prompt[t, 0] += e2 * (t + 1)
            m.prompt[t, 1] -= e2 * (t + 1)
    probe_mean = 0.3 * e1 + e2  # closest to source 1 (cos 0.958), then 0 (0.287), then 2 (-0.287)
    calls = []

    def tune(probe, steps):
        calls.append(steps)
        with torch.no_grad():
            probe.prompt[0] = probe_mean

    target = m.for_target(_context("product_sentiment", backbone, tune))
    assert calls == [2]  # the probe was tuned for probe_steps
    assert target.state.retrieved_from == "news_topic"
    assert torch.equal(target.prompt[0], m.prompt[1])
    norm = (0.09 + 1) ** 0.5
    want = {"movie_sentiment": 0.3 / norm, "news_topic": 1 / norm, "emotion": -0.3 / norm}
    assert target.state.similarities == pytest.approx(want, abs=1e-5)
    assert target.log_state() == {"retrieved_from": "news_topic"}
    with pytest.raises(ValueError, match="needs the target task's shots"):
        m.for_target(_context("product_sentiment", backbone))


def _attempt(backbone, **kw):
    m = build("attempt", backbone, temperature=0.5, **kw)
    with torch.no_grad():  # distinct sources, so the mixture weights are far from uniform
        m.source_prompts.normal_(generator=torch.Generator().manual_seed(3))
    return m


def test_attempt_weights_follow_the_formula_sum_to_one_and_depend_on_the_input(backbone):
    m = _attempt(backbone)
    pad = backbone.tokenizer.pad_token_id
    examples = [Encoded("a", 1, (5, 6, 7, 8, 9), (30,), "l"), Encoded("b", 1, (40, 41, 42), (50, 51), "l")]
    batch = answer_batch(examples, pad)
    weights = m.attention_weights(batch.task_ids, batch)
    assert weights.shape == (2, 4)  # 3 sources + the target prompt
    assert torch.allclose(weights.sum(-1), torch.ones(2))
    assert not torch.allclose(weights[0], weights[1], atol=1e-4)  # same task, different inputs
    emb = backbone.model.get_input_embeddings().weight
    prompts = torch.cat([m.source_prompts, m.prompt[1:2]])  # (4, m, d)
    for row, e in enumerate(examples):
        pooled = emb[list(e.prompt)].max(0).values  # the prompt tokens only: no padding, no answer
        h = m.norm(m.up(torch.nn.functional.silu(m.down(pooled))))
        want = torch.softmax(prompts.max(1).values @ h / 0.5, -1)
        assert torch.allclose(weights[row], want, atol=1e-5)
        mixture = m.prompt[1] + sum(want[j] * prompts[j] for j in range(4))
        assert torch.allclose(m.prompt_inputs(batch.task_ids, batch=batch).input_prefix[row], mixture, atol=1e-5)
    alone = m.attention_weights(torch.tensor([1]), answer_batch(examples[1:], pad))
    assert torch.allclose(alone[0], weights[1], atol=1e-6)  # padding never reaches the pool


def test_attempt_target_keeps_sources_and_attention_and_trains_a_new_prompt(backbone):
    m = _attempt(backbone)
    target = m.for_target(_context("product_sentiment", backbone))
    assert target.state.sources == TASKS and target.stage1(backbone) is None
    assert torch.equal(target.source_prompts, m.source_prompts) and not target.source_prompts.requires_grad
    assert torch.equal(target.down.weight, m.down.weight) and torch.equal(target.up.weight, m.up.weight)
    trainable = {n for n, p in target.named_parameters() if p.requires_grad}
    assert trainable == {"prompt", "down.weight", "up.weight", "norm.weight", "norm.bias"}
    assert "source_prompts" in target.state_dict()  # a target needs its sources to run


def test_mpt_prompt_is_the_shared_prompt_times_a_rank_one_factor(backbone):
    m = build("mpt", backbone)
    stage1 = m.stage1(backbone)
    m.init_from_stage1(stage1)
    assert torch.allclose(m.shared, stage1.prompt.mean(0))
    start = m.prompt_inputs(torch.tensor([0, 2])).input_prefix
    assert torch.equal(start, m.shared.expand(2, -1, -1))  # u = v = 1: every task starts at P*
    with torch.no_grad():
        m.u.normal_()
        m.v.normal_()
    ids = torch.tensor([2, 0, 2])
    got = m.prompt_inputs(ids).input_prefix
    for row, t in enumerate(ids.tolist()):
        assert torch.allclose(got[row], m.shared * torch.outer(m.u[t], m.v[t]), atol=1e-6)
    assert "teachers" not in m.state_dict() and m.teachers.shape == stage1.prompt.shape


def test_mpt_prompt_equals_peft_multitask_prompt_embedding(backbone):
    from peft import MultitaskPromptTuningConfig
    from peft.tuners.multitask_prompt_tuning import MultitaskPromptEmbedding

    m = build("mpt", backbone)
    with torch.no_grad():
        m.u.normal_()
        m.v.normal_()
    cfg = MultitaskPromptTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=4,
        token_dim=backbone.hidden_size,
        num_transformer_submodules=1,
        num_tasks=3,
        num_ranks=1,
    )
    peft = MultitaskPromptEmbedding(cfg, backbone.model.get_input_embeddings())
    with torch.no_grad():  # P* = PEFT's prompt embedding, u = its (m x 1) columns, v = its (1 x d) rows
        peft.embedding.weight.copy_(m.shared)
        peft.prefix_task_cols.copy_(m.u[:, :, None])
        peft.prefix_task_rows.copy_(m.v[:, None, :])
        ids = torch.tensor([1, 0, 2, 1])
        want = peft(torch.arange(4).expand(4, -1), ids)
        assert torch.allclose(m.prompt_inputs(ids).input_prefix, want, atol=1e-6)


def test_mpt_distillation_is_the_scaled_kl_to_the_teacher_prompt(backbone):
    m = build("mpt", backbone, distill_weight=0.5, distill_temperature=2.0)
    examples = items(4)
    batch = answer_batch(examples, backbone.tokenizer.pad_token_id)
    stage1 = m.stage1(backbone)
    with torch.no_grad():
        stage1.prompt.copy_(stage1.prompt[0].expand(3, -1, -1))
    m.init_from_stage1(stage1)
    assert m.auxiliary_loss(backbone, batch).abs().item() < 1e-6  # student = teacher: nothing to distil
    with torch.no_grad():
        stage1.prompt.add_(0.3 * torch.randn(stage1.prompt.shape, generator=torch.Generator().manual_seed(0)))
    m.init_from_stage1(stage1)  # P* = the teachers' mean, u = v = 1
    teachers = stage1.prompt.detach()

    def answer_logits(prefix):
        emb = backbone.model.get_input_embeddings()(batch.input_ids)
        mask = torch.cat([torch.ones(len(examples), prefix.shape[1], dtype=torch.long), batch.attention_mask], 1)
        out = backbone.model(inputs_embeds=torch.cat([prefix, emb], 1), attention_mask=mask).logits
        return out[batch.rows, batch.cols + prefix.shape[1]] / 2.0

    with torch.no_grad():
        s = answer_logits(m.shared.expand(len(examples), -1, -1)).log_softmax(-1)
        t = answer_logits(teachers[batch.task_ids]).log_softmax(-1)
        want = 0.5 * 4 * (t.exp() * (t - s)).sum(-1).mean()
        assert torch.allclose(m.auxiliary_loss(backbone, batch), want, rtol=1e-4)
    target = m.for_target(_context("product_sentiment", backbone))
    assert target.auxiliary_loss(backbone, batch) is None and target.stage1(backbone) is None
    assert torch.equal(target.shared, m.shared) and torch.equal(target.u, torch.ones(1, 4))


@pytest.mark.parametrize("transfer_shared", [True, False])
def test_mpt_target_trains_the_shared_prompt_unless_told_not_to(backbone, transfer_shared):
    """MPT's target adaptation trains P* with u, v (the default); transfer_shared: false freezes P*."""
    from talora.core.forward import answer_loss

    source = build("mpt", backbone, transfer_shared=transfer_shared)
    target = source.for_target(_context("product_sentiment", backbone))
    batch = answer_batch(items(4, tasks=1), backbone.tokenizer.pad_token_id)
    answer_loss(backbone, target, batch).backward()
    moved = {n for n, p in target.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    groups = {g["name"] for g in target.param_groups()}
    m, d = 4, backbone.hidden_size
    if transfer_shared:
        assert moved == {"shared", "u", "v"} and groups == {"shared", "uv"}
        assert target.trainable_parameters() == {"shared": 0, "per_task": m * d + m + d}
    else:
        assert moved == {"u", "v"} and groups == {"uv"} and target.shared.grad is None
        assert target.trainable_parameters() == {"shared": m * d, "per_task": m + d}
    assert all(p.grad is None for p in source.parameters())  # the source's P* is copied, not shared


def test_lora_is_peft_with_only_lora_weights_trainable_and_no_effect_at_start(backbone):
    from peft.tuners.lora import LoraLayer

    frozen = logits(backbone)
    m = build("lora", backbone)
    names = [n for n, _ in m.named_parameters()]
    layers = backbone.num_layers
    assert len(names) == layers * 2 * 2 and all("lora_A" in n or "lora_B" in n for n in names)  # q, v x A, B
    assert all(torch.count_nonzero(p) == 0 for n, p in m.named_parameters() if "lora_B" in n)
    assert torch.equal(logits(backbone, m), frozen)  # B = 0: exactly the frozen model
    attn = backbone.model.get_decoder().layers[0].self_attn
    with m.applied(backbone):
        assert isinstance(attn.q_proj, LoraLayer) and isinstance(attn.v_proj, LoraLayer)
        assert not isinstance(attn.k_proj, LoraLayer)
        assert attn.q_proj.scaling == {"talora": 16 / 2}
    assert type(attn.q_proj) is torch.nn.Linear
    d, r = backbone.hidden_size, 2
    kv = backbone.model.config.num_key_value_heads * (d // backbone.model.config.num_attention_heads)
    assert m.trainable_parameters() == {"shared": 0, "per_task": layers * (r * (d + d) + r * (d + kv))}


def test_adapter_starts_as_the_frozen_model_and_hooks_every_block(backbone):
    frozen = logits(backbone)
    m = build("adapter", backbone)
    assert torch.equal(logits(backbone, m), frozen)  # W_up = 0
    with torch.no_grad():
        m.adapters[1]["mlp"].up.weight.normal_()
    assert not torch.allclose(logits(backbone, m), frozen)
    d, b, layers = backbone.hidden_size, 8, backbone.num_layers
    assert m.trainable_parameters()["per_task"] == layers * 2 * (2 * d * b + b + d)


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "gemma3"])
def test_bitfit_trains_only_norms_and_biases_and_starts_as_the_frozen_model(tmp_path, family):
    from conftest import make_backbone

    backbone = make_backbone(family)
    frozen = logits(backbone)
    m = build("bitfit", backbone)
    assert torch.equal(logits(backbone, m), frozen)
    cfg = backbone.model.config
    L, d, inter = cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size
    hd = getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads
    q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    per_layer = 4 if family == "gemma3" else 2  # Gemma 3 also normalises after attention and after the MLP
    qk_norms = L * 2 * hd if family in ("qwen3", "gemma3") else 0  # and q and k per head, as Qwen3 does
    norms = L * per_layer * d + d + qk_norms
    biases = L * (q + 2 * kv + d + 2 * inter + d)
    assert sum(p.numel() for p in m.norms.values()) == norms
    assert sum(p.numel() for p in m.biases.values()) == biases
    assert m.trainable_parameters()["per_task"] == norms + biases
    assert {n.split(".")[0] for n, _ in m.named_parameters()} == {"norms", "biases"}
    before = snapshot(backbone)
    fit(m, backbone, tmp_path)
    assert not torch.allclose(logits(backbone, m), frozen)
    assert_untouched(backbone, before)


def test_full_finetune_swaps_every_weight_in_and_keeps_tied_weights_tied(tmp_path):
    from conftest import tiny_config, tiny_tokenizer
    from transformers import AutoModelForCausalLM

    from talora.core.backbone import Backbone, freeze

    cfg = tiny_config("llama")
    cfg.tie_word_embeddings = True
    torch.manual_seed(0)
    backbone = freeze(
        Backbone(AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa"), tiny_tokenizer(), "tiny-tied")
    )
    model = backbone.model
    assert model.lm_head.weight is model.get_input_embeddings().weight
    m = build("full_finetune", backbone)
    assert m.trainable_parameters()["per_task"] == sum(p.numel() for p in model.parameters())
    before, frozen = snapshot(backbone), logits(backbone)
    fit(m, backbone, tmp_path)
    with m.applied(backbone):
        assert model.lm_head.weight is model.get_input_embeddings().weight is m.weights["model/embed_tokens/weight"]
        assert all(p.requires_grad for p in model.parameters())
    assert not torch.allclose(logits(backbone, m), frozen)
    assert_untouched(backbone, before)


# (3) Adapter files: a method is rebuilt from (config, backbone, task names) and its state dict.


@pytest.mark.parametrize("name", NAMES)
def test_adapter_files_round_trip(tmp_path, backbone, name):
    specs = {t: task.spec for t, task in load_tasks(None, TASKS).items()}
    method = build(name, backbone)
    fit(method, backbone, tmp_path / "run")
    save_adapter(tmp_path / "a", method, backbone, specs)
    loaded, loaded_specs = load_adapter(tmp_path / "a", backbone, expect_method=name)
    assert loaded.config == method.config and list(loaded_specs) == TASKS
    mine, theirs = method.state_dict(), loaded.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    batch = answer_batch(items(6, seed=2), backbone.tokenizer.pad_token_id)
    from talora.core.forward import hidden_at

    with torch.no_grad(), method.applied(backbone):
        want = hidden_at(backbone, method, batch)
    with torch.no_grad(), loaded.applied(backbone):
        got = hidden_at(backbone, loaded, batch)
    assert torch.equal(got, want)
