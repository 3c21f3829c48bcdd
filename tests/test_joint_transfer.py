"""Several target tasks transferred together (TA-LoRA §III-E): what learns, what is scored, what is refused."""

import json

import pytest
import torch
from conftest import make_backbone
from reference_scores import adapter_accuracy

from talora.adapters.files import load_adapter
from talora.cli import main
from talora.config import RunConfig, TrainConfig
from talora.errors import ConfigError
from talora.methods.base import TargetContext
from talora.methods.talora import TALoRA, TALoRAConfig
from talora.recipes import pipeline

TARGETS = ["tweet_emotion", "headline_topic"]


def _source() -> TALoRA:
    backbone = make_backbone()
    source = TALoRA(TALoRAConfig(length=2, layers=2, rank=2), backbone, ["a", "b", "c"])
    with torch.no_grad():
        for p in source.parameters():
            p.copy_(torch.randn_like(p))
    return source, backbone


def test_joint_targets_learn_the_shared_weights_single_targets_do_not():
    source, backbone = _source()
    joint = source.for_targets(["x", "y"], backbone)
    single = source.for_target(TargetContext("x", backbone))
    trainable = lambda m: {n for n, p in m.named_parameters() if p.requires_grad}  # noqa: E731
    assert trainable(joint) == {"theta0", "B", "u", "v", "gates"}
    assert trainable(single) == {"u", "v"}
    for name in ("theta0", "B", "gates"):
        torch.testing.assert_close(getattr(joint, name), getattr(source, name), rtol=0, atol=0)
    assert joint.u.abs().sum() == 0 and joint.u.shape[1] == 2
    torch.testing.assert_close(joint.source_u, source.u, rtol=0, atol=0)
    groups = {g["name"]: g["lr"] for g in joint.param_groups()}
    cfg = source.config
    assert groups == {"theta0": cfg.lr_slow, "B": cfg.lr_slow, "uv": cfg.lr_target, "gate": cfg.lr_gate}

    # The regulariser pairs the targets with each other and with every frozen source, by definition.
    with torch.no_grad():
        joint.u.copy_(torch.randn_like(joint.u))
    a = lambda u, v: torch.einsum("lr,ld->lrd", u, v)  # noqa: E731  (L, r, d): A per layer
    targets = [a(joint.u[:, i], joint.v[:, i]) for i in range(2)]
    sources = [a(source.u[:, j], source.v[:, j]) for j in range(3)]
    pairs = [(targets[0], targets[1])] + [(t, s) for t in targets for s in sources]
    expected = sum((x @ y.transpose(1, 2)).pow(2).sum() for x, y in pairs)
    torch.testing.assert_close(joint.regularization(), cfg.lambda_orth * expected, rtol=1e-4, atol=0)


def test_methods_without_a_joint_mode_refuse():
    from talora.methods.prompt_tuning import PromptTuning, PromptTuningConfig

    backbone = make_backbone()
    with pytest.raises(ConfigError, match="transfers one target task at a time"):
        PromptTuning(PromptTuningConfig(length=2), backbone, ["a"]).for_targets(["x", "y"], backbone)


def _cfg(method="talora", **method_args):
    short = TrainConfig(steps=3, batch_size=4, warmup_steps=1, eval_every=0, eval_examples=4)
    return RunConfig(
        method=method,
        model="tiny",
        tasks=["movie_sentiment", "news_topic"],
        max_length=48,
        train_examples=12,
        validation_examples=6,
        test_examples=10,
        method_args={"length": 2, **method_args},
        stage1=short,
        train=short,
        transfer=TrainConfig(steps=4, batch_size=4, warmup_steps=1, eval_every=0),
    )


def test_joint_transfer_end_to_end(tmp_path, tiny_models):
    pipeline.run_train(_cfg(layers=2), tmp_path / "src")
    summary = pipeline.run_joint_transfer(tmp_path / "src", TARGETS, 2, 0, tmp_path / "joint")
    backbone = tiny_models["tiny"]
    source, _ = load_adapter(tmp_path / "src", backbone)
    joint, specs = load_adapter(tmp_path / "joint", backbone)
    assert joint.task_names == TARGETS and set(specs) == set(TARGETS)
    assert not torch.equal(joint.theta0, source.theta0)  # the shared weights moved with the targets
    for task in TARGETS:
        split = summary["splits"][task]
        assert summary["scores"][task] == pytest.approx(
            adapter_accuracy(backbone, tmp_path / "joint", task, split, 48, 10)
        )
    assert summary["train_examples"] == sum(len(specs[t].labels) * 2 for t in TARGETS)
    assert json.loads((tmp_path / "joint" / "metrics.json").read_text())["scores"] == summary["scores"]


def test_joint_transfer_refusals_write_nothing(tmp_path, tiny_models, capsys):
    pipeline.run_train(_cfg("prompt_tuning"), tmp_path / "pt")
    with pytest.raises(ConfigError, match="'prompt_tuning' transfers one target task at a time"):
        pipeline.run_joint_transfer(tmp_path / "pt", TARGETS, 2, 0, tmp_path / "out")
    with pytest.raises(ConfigError, match="two or more different target tasks"):
        pipeline.run_joint_transfer(tmp_path / "pt", ["tweet_emotion", "tweet_emotion"], 2, 0, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: prompt_tuning\n")
    args = ["transfer", "--config", str(cfg), "--task", *TARGETS, "--k", "2", "--output", str(tmp_path / "out")]
    assert main(args) == 2
    assert "several --task names are transferred together from a source: give --from" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
