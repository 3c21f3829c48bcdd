"""``talora plan``: trainable parameters and an estimate of GPU memory, with no weights read.

The backbone is built on PyTorch's meta device from its config alone (a local folder's
config.json, a shipped config under ``talora/configs/models``, the embedded GGUF's metadata,
or a hub id's config), so planning Qwen2.5-7B takes seconds and no memory. The methods are
then constructed on that backbone exactly as training constructs them, and their own
``param_groups()`` and ``trainable_parameters()`` give the counts: nothing is re-derived.

The memory figures are an estimate for one training step on one GPU; ``activation_bytes``
says what it counts and what it leaves out.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from ..config import PACKAGED_CONFIGS, RunConfig, TrainConfig, from_dict
from ..core.backbone import EMBEDDED, EMBEDDED_ID, Backbone, cache_dir, embedded_gguf_path, loadable_spec
from ..errors import ConfigError
from ..methods import METHODS, Method, method_class
from ..methods.base import PromptConfig, SoftPromptConfig, WholeSetMethod

MODELS_DIR = PACKAGED_CONFIGS / "models"
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# The soft-prompt fields (m, L, attention, initialisation). --all-methods gives the other methods
# these from the config's method_args, so every row is planned at the same m and L; the rest
# (rank, learning rates) means different things to different methods.
PROMPT_SHAPE_FIELDS = tuple(f.name for f in dataclasses.fields(PromptConfig))
GIB = 2**30
OPTIMIZER_BYTES_PER_PARAM = 16  # float32 master weight + gradient + AdamW's two moments
DEFAULT_ANSWER_TOKENS = 16


def shipped_models() -> list[str]:
    return sorted(p.stem for p in MODELS_DIR.glob("*.json"))


# --- the model's shapes, without its weights -----------------------------------------------------


def _gguf_config(gguf: Path) -> tuple[PretrainedConfig, str]:
    """The config of a GGUF model: the converted copy's config.json when a load made one (instant),
    else the GGUF's own metadata (reads no tensor data, but parsing the tokenizer takes ~30 s)."""
    for source in sorted((cache_dir() / "models").glob(f"{gguf.stem}-*/talora-source.json")):
        try:
            made_from = json.loads(source.read_text())
        except (OSError, ValueError):
            continue
        if made_from.get("gguf") == str(gguf) and made_from.get("size") == gguf.stat().st_size:
            return AutoConfig.from_pretrained(str(source.parent)), f"{source.parent}/config.json"
    return AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name), f"{gguf} (GGUF metadata)"


def model_config(spec: str) -> tuple[PretrainedConfig, str]:
    """The config of ``spec`` and where it came from.

    ``spec``: a shipped name (``qwen2.5-7b-instruct``), a config .json file, a model folder,
    "embedded", a .gguf file, or a hub id. A hub id is looked up in the local Hugging Face
    cache first, then matched by its name to a shipped config (``Qwen/Qwen2.5-7B-Instruct`` ->
    ``qwen2.5-7b-instruct.json``, which holds the published config.json fields), and only
    then asked of the hub: planning the paper's setting works offline. ``gemma3-270m`` is a shipped
    config (the published one), so it plans without the packages that carry its weights.
    """
    spec = loadable_spec(spec)  # a named model's recorded id plans as that model
    shipped = MODELS_DIR / f"{spec.lower()}.json"
    if "/" not in spec and shipped.is_file():
        return AutoConfig.from_pretrained(str(shipped)), f"{shipped} (shipped)"
    if spec == EMBEDDED:
        config, source = _gguf_config(embedded_gguf_path())
        return config, f"{EMBEDDED_ID}: {source}"
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise ConfigError(f"GGUF file not found: {spec}")
        return _gguf_config(path.resolve())
    if spec.endswith(".json"):
        if not path.is_file():
            raise ConfigError(f"model config file not found: {spec}")
        return _auto_config(str(path), spec), str(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model folder {spec} has no config.json (is it a Hugging Face model folder?)")
        return _auto_config(str(path), spec), f"{path}/config.json"
    if path.is_absolute() or spec.startswith((".", "~")) or spec.count("/") > 1:
        raise ConfigError(f"model folder not found: {spec}")
    try:
        return AutoConfig.from_pretrained(spec, local_files_only=True), f"{spec} (local Hugging Face cache)"
    except OSError:
        pass
    by_name = MODELS_DIR / f"{spec.rsplit('/', 1)[-1].lower()}.json"
    if by_name.is_file():
        return AutoConfig.from_pretrained(str(by_name)), f"{by_name} (shipped, matched to {spec} by name)"
    try:
        return AutoConfig.from_pretrained(spec), f"{spec} (Hugging Face hub)"
    except OSError:
        raise ConfigError(
            f"cannot read the config of {spec!r} (not cached, no shipped config of that name, hub unreachable?); "
            f"give --model a model folder, a config.json or a shipped name ({', '.join(shipped_models())})"
        ) from None


def _auto_config(location: str, spec: str) -> PretrainedConfig:
    try:
        return AutoConfig.from_pretrained(location)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read the model config {spec}: {err}") from None


def meta_backbone(config: PretrainedConfig, model_id: str, dtype: torch.dtype = torch.bfloat16) -> Backbone:
    """The model of ``config`` on the meta device (shapes and dtypes, no storage), frozen.

    No tokenizer: no method's constructor reads one. Tied weights stay tied, so counting
    ``model.parameters()`` counts a shared embedding once.
    """
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    except ValueError as err:  # an architecture transformers has no causal-LM class for
        raise ConfigError(f"cannot build a causal LM from the config of {model_id}: {err}") from None
    for p in model.parameters():
        p.requires_grad_(False)
    return Backbone(model, None, model_id)


@dataclass
class ModelShape:
    """The numbers the plan reads from a model config (and the meta model's parameter count)."""

    architecture: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    parameters: int
    tied_embeddings: bool
    norms: int = 2  # RMSNorms over the hidden size per decoder layer (Gemma 3: 4, before and after each block)
    qk_norms: bool = False  # per-head RMSNorms of queries and keys (Qwen3, Gemma 3)

    @classmethod
    def of(cls, backbone: Backbone) -> ModelShape:
        cfg, model = backbone.model.config, backbone.model
        heads = cfg.num_attention_heads
        # Counted on the first decoder layer, so an architecture is described by what it builds.
        layer_norms = [m for m in model.get_decoder().layers[0].modules() if type(m).__name__.endswith("RMSNorm")]
        width = lambda m: getattr(m, "weight", torch.empty(0)).shape[-1]  # noqa: E731
        return cls(
            architecture=type(model).__name__,
            layers=cfg.num_hidden_layers,
            hidden=cfg.hidden_size,
            heads=heads,
            kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
            head_dim=getattr(cfg, "head_dim", None) or cfg.hidden_size // heads,
            intermediate=getattr(cfg, "intermediate_size", None) or 4 * cfg.hidden_size,
            vocab=cfg.vocab_size,
            parameters=sum(p.numel() for p in model.parameters()),
            tied_embeddings=model.get_output_embeddings().weight is model.get_input_embeddings().weight,
            norms=sum(width(m) == cfg.hidden_size for m in layer_norms),
            qk_norms=any(width(m) != cfg.hidden_size for m in layer_norms),
        )


# --- the memory estimate -------------------------------------------------------------------------


def activation_bytes(
    shape: ModelShape,
    kind: str,
    grad_layers: int,
    batch: int,
    seq: int,
    prompt_length: int,
    answer_tokens: int,
    dtype_bytes: int,
    checkpointing: bool = False,
    weight_inputs: int = 0,
    embeddings_train: bool = False,
    first_attention_saves: bool = True,
    scored_weight_inputs: int = 0,
) -> int:
    """Bytes autograd keeps for the backward pass of one training step: an ESTIMATE.

    Notation: b = batch, S = tokens per example (max_length, + m for input-level prompts),
    T = b*S, s = bytes per element at the compute dtype, d = hidden size, a = heads*head_dim,
    f = MLP width, H = heads, hd = head_dim, V = vocabulary, m = prompt length, n = answer
    tokens per example, L_g = layers that carry gradients (all layers above the method's
    ``frozen_below``; the frozen layers below run under no_grad and keep nothing).

    What one Qwen2/Llama decoder layer saves, per token (N = the layer's RMSNorms over d:
    2, Gemma 3: 4; kv = key/value heads):

        N RMSNorms      N * (4d + 4)   the float32 copy of the input and 1/rms (HF norms upcast)
        q/k norms       4(a + kv*hd) + 4(H + kv)   the same per head, where the model has them
                                       (Qwen3, Gemma 3)
        attention       s * (2a + 2c) + 4H   q, k, v (repeated to H heads, c = a: a padding mask
                                       rules out SDPA's native GQA; one key/value head repeats as
                                       a view, c = hd) and the output, + the log-sum-exp
        MLP             s * 3f         silu's input, its output and up_proj's output
        deep prompts    s * a + 4H     the gated prompt attention's output + its log-sum-exp
        trained weights s * w          w = ``weight_inputs``: the inputs that the trained
                                       weights' gradients need (``weight_inputs_per_token``)

    A frozen linear layer saves nothing (its input is needed only for its weight's gradient).
    Per layer, once: the boolean mask turned into an additive bias by each SDPA call, b*S^2*s;
    deep prompts add their keys/values, 2*b*m*H_kv*hd*s (shared by the query heads of a group). The
    last layer runs its MLP at the b*n scored positions alone, so it saves (T - b*n)*s*3f less.
    Per step, once: rotary
    cos/sin 2*T*hd*s, the final norm's float32 copy T*(4d + 4), the boolean causal mask b*S^2,
    and the answer logits b*n*V*(8 + s) (the float32 log-softmax kept for backward, then the
    logits' gradient in float32 and in the compute dtype; never the full b*S*V logits).

    The lowest layer with gradients saves less when its input needs none (everything but
    input-level prompts and full fine-tuning): no first norm, T*(4d + 4); for deep prompts
    not its own attention either (only q, for the prompt term) nor its q/k norms:
    T*(s*(a + 2c) + 4H) + b*S^2*s; and when nothing before its attention output trains
    (``first_attention_saves`` false: adapters) no attention at all: T*(s*(2a + 2c) + 4H) + b*S^2*s.

        activations = L_g * (T * per_token + per_layer) - first_layer_saving + once
        with gradient checkpointing (each layer keeps its input; the backward recomputes
        one layer at a time):
        activations = L_g * T * s * d + (T * per_token + per_layer) + once

    Checked on CPU (tests/test_plan.py) against the sum of the tensors autograd saves, read
    through ``torch.autograd.graph.saved_tensors_hooks``, for tiny Qwen2 models in float32 and
    bfloat16: within a few per cent for every method. CUDA's flash and memory-efficient
    attention kernels save the same q, k, v, output and log-sum-exp as the CPU kernel.

    Ignored: transient buffers inside one layer's forward or backward, the forward of the
    frozen lower layers (no autograd, freed layer by layer), evaluation passes, extra forward
    passes of a method (MPT's teachers, ATTEMPT's instance attention), CUDA's context and the
    allocator's fragmentation. S is the padded maximum: length bucketing and short examples
    only lower the real figure.
    """
    if grad_layers == 0:
        return 0
    s, d, f, H, hd = dtype_bytes, shape.hidden, shape.intermediate, shape.heads, shape.head_dim
    a = shape.heads * shape.head_dim
    S = seq + (prompt_length if kind == "input" else 0)
    T = batch * S
    kv = shape.kv_heads
    c = kv * hd if kv in (1, H) else a  # keys (and values) as saved: repeat_kv copies unless kv is 1
    qk_norms = 4 * (a + kv * hd) + 4 * (H + kv) if shape.qk_norms else 0
    attention = s * (2 * a + 2 * c) + 4 * H
    per_token = shape.norms * (4 * d + 4) + qk_norms + attention + s * 3 * f + s * weight_inputs
    per_layer = batch * S * S * s
    if kind == "deep":
        per_token += s * a + 4 * H
        per_layer += 2 * batch * prompt_length * shape.kv_heads * hd * s
    once = T * (2 * hd * s + 4 * d + 4) + batch * S * S + batch * answer_tokens * shape.vocab * (8 + s)
    first_layer_saving = 0
    if kind != "input" and not embeddings_train:
        first_layer_saving = T * (4 * d + 4)
        if kind == "deep":
            first_layer_saving += T * (attention - s * a + qk_norms) + batch * S * S * s
        elif not first_attention_saves:
            first_layer_saving += T * (attention + qk_norms) + batch * S * S * s
    # The last layer runs its MLP at the scored positions alone (talora.core.forward): about b*n of T.
    last_layer_saving = max(T - batch * answer_tokens, 0) * s * (3 * f + scored_weight_inputs)
    if checkpointing:
        return grad_layers * T * s * d + T * per_token + per_layer + once
    return grad_layers * (T * per_token + per_layer) - first_layer_saving - last_layer_saving + once


SCORED_ONLY_BLOCKS = ("o_proj", "gate_proj", "up_proj", "down_proj")


def weight_inputs_per_token(method: Method, shape: ModelShape, blocks: tuple[str, ...] | None = None) -> int:
    """Elements per token and layer that a weight-changing method's trained weights make autograd
    keep (their inputs), beyond what the frozen layer saves; 0 for prompt methods.

    Known methods are counted from their config; any other weight-changing method is given
    full fine-tuning's figure, an upper bound. ``blocks``: count only the inputs of these
    projections (the last layer runs o_proj and the MLP at the scored positions alone).
    """
    if not isinstance(method, WholeSetMethod):
        return 0
    d, a, f, cfg = shape.hidden, shape.heads * shape.head_dim, shape.intermediate, method.config
    # Projections that read the same tensor share one saved input.
    inputs = {"q_proj": ("qkv", d), "k_proj": ("qkv", d), "v_proj": ("qkv", d), "o_proj": ("o", a)}
    inputs |= {"gate_proj": ("gate_up", d), "up_proj": ("gate_up", d), "down_proj": ("down", f)}
    if blocks is not None:
        inputs = {k: v for k, v in inputs.items() if k in blocks}
    if method.name == "lora":
        targets = [t for t in cfg.target_modules if t in inputs]
        return sum(dict(inputs[t] for t in targets).values()) + cfg.rank * len(targets)
    if blocks is not None:  # norms and added modules run at every position
        return sum(dict(inputs.values()).values()) if method.name == "full_finetune" else 0
    # The norms' outputs, which their trained weights' gradients need (q/k norms: per head).
    norm_outputs = shape.norms * d + (a + shape.kv_heads * shape.head_dim if shape.qk_norms else 0)
    if method.name == "bitfit":
        return norm_outputs if cfg.train_norms else 0  # an added bias saves nothing
    if method.name == "adapter":
        return 2 * (d + 2 * cfg.bottleneck)  # per bottleneck: its input, the activation's input and output
    return norm_outputs + d + a + d + f  # full fine-tuning: the norms' outputs and every projection's input


def method_kind(method: Method) -> str:
    """How a method changes the model: "deep" (prompts on the top layers' attention), "input"
    (soft tokens before the input), "weights" (LoRA, adapters, BitFit, full fine-tuning)."""
    if isinstance(method, WholeSetMethod):
        return "weights"
    if isinstance(method.config, PromptConfig):
        return "deep"
    if isinstance(method.config, SoftPromptConfig):
        return "input"
    return "none"


def activation_estimate(method: Method, shape: ModelShape, batch: int, seq: int, answer_tokens: int, **kw) -> int:
    """``activation_bytes`` for ``method`` as built (its kind, prompted layers and trained weights)."""
    return activation_bytes(
        shape,
        method_kind(method),
        shape.layers - method.frozen_below,
        batch,
        seq,
        getattr(method.config, "length", 0),
        answer_tokens,
        weight_inputs=weight_inputs_per_token(method, shape),
        scored_weight_inputs=weight_inputs_per_token(method, shape, SCORED_ONLY_BLOCKS),
        embeddings_train=method.name == "full_finetune",
        first_attention_saves=method.name != "adapter",  # its first trained weight follows the attention
        **kw,
    )


@dataclass
class Memory:
    """Estimated bytes on one GPU during a training step."""

    weights: int  # the frozen backbone at the compute dtype (+ the method's frozen buffers)
    activations: int  # see activation_bytes
    optimizer: int  # trainable parameters: float32 master copy, gradient, AdamW's two moments

    @property
    def total(self) -> int:
        return self.weights + self.activations + self.optimizer


@dataclass
class MethodPlan:
    method: str
    stage: str  # "train", or "stage 1" / "stage 2" for two-stage methods
    groups: list[dict] = field(default_factory=list)  # AdamW groups: name, params, lr
    shared: int = 0
    per_task: int = 0
    memory: Memory | None = None
    checkpointing: bool = False  # activations planned with gradient checkpointing
    not_planned: str | None = None  # why the method could not be built on the meta backbone

    @property
    def trainable(self) -> int:
        return sum(g["params"] for g in self.groups)


@dataclass
class Plan:
    model: str
    source: str
    shape: ModelShape
    dtype: str
    checkpointing: bool
    answer_tokens: int
    tasks: list[str]
    max_length: int
    rows: list[MethodPlan]

    def to_json(self) -> dict:
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "rows"}
        out["rows"] = []
        for row in self.rows:
            item = {k: v for k, v in dataclasses.asdict(row).items() if k != "memory"}
            if row.memory is not None:
                item["trainable"] = row.trainable
                item["memory_bytes"] = {**dataclasses.asdict(row.memory), "total": row.memory.total}
                item["memory_gib"] = {k: round(v / GIB, 3) for k, v in item["memory_bytes"].items()}
            out["rows"].append(item)
        return out


def _plan_row(
    method: Method, name: str, stage: str, train: TrainConfig, max_length: int, shape: ModelShape, options: dict
) -> MethodPlan:
    groups = [
        {"name": g["name"], "params": sum(p.numel() for p in g["params"]), "lr": g["lr"]} for g in method.param_groups()
    ]
    counts = method.trainable_parameters()
    dtype_bytes = DTYPES[options["dtype"]].itemsize
    checkpointing = options["checkpointing"] or getattr(train, "gradient_checkpointing", False)
    activations = activation_estimate(
        method,
        shape,
        train.batch_size,
        max_length,
        options["answer_tokens"],
        dtype_bytes=dtype_bytes,
        checkpointing=checkpointing,
    )
    memory = Memory(
        weights=shape.parameters * dtype_bytes + sum(b.numel() * b.element_size() for b in method.buffers()),
        activations=activations,
        optimizer=sum(g["params"] for g in groups) * OPTIMIZER_BYTES_PER_PARAM,
    )
    return MethodPlan(name, stage, groups, counts["shared"], counts["per_task"], memory, checkpointing)


def plan_method(
    name: str,
    method_args: dict,
    cfg: RunConfig,
    backbone: Backbone,
    shape: ModelShape,
    tasks: list[str],
    dtype: str = "bfloat16",
    checkpointing: bool = False,
    answer_tokens: int = DEFAULT_ANSWER_TOKENS,
) -> list[MethodPlan]:
    """One row per training stage of method ``name``, or one "not planned" row saying why."""
    try:
        cls = method_class(name)
        method = cls(from_dict(cls.config_cls, method_args, "method_args"), backbone, tasks)
        first = method.stage1(backbone)
        options = dict(dtype=dtype, checkpointing=checkpointing, answer_tokens=answer_tokens)
        if first is None:
            return [_plan_row(method, name, "train", cfg.train, cfg.max_length, shape, options)]
        return [
            _plan_row(first, name, "stage 1", cfg.stage1, cfg.max_length, shape, options),
            _plan_row(method, name, "stage 2", cfg.train, cfg.max_length, shape, options),
        ]
    except Exception as err:  # a constructor that needs real weights or a tokenizer: say so, plan the rest
        why = " ".join(f"{type(err).__name__}: {err}".replace("|", "/").split())
        return [MethodPlan(name, "-", not_planned=why)]


def plan_tasks(cfg: RunConfig) -> list[str]:
    """The tasks a run of ``cfg`` trains on: its ``tasks``, else the data folder's source tasks."""
    if cfg.tasks:
        return list(cfg.tasks)
    from .pipeline import source_task_names

    names = source_task_names(cfg.data_dir)
    if not names:
        raise ConfigError(f"plan: the config names no tasks and {cfg.data_dir} holds no source task; set tasks")
    return names


def make_plan(
    cfg: RunConfig,
    model: str | None = None,
    dtype: str | None = None,
    checkpointing: bool = False,
    all_methods: bool = False,
    answer_tokens: int = DEFAULT_ANSWER_TOKENS,
    backbone: Backbone | None = None,
) -> Plan:
    """The plan of run config ``cfg`` (its method, or every registered method) on ``model``
    (default: the config's model), built on the meta device; ``backbone`` reuses a meta backbone.

    ``dtype`` defaults to the config's, and "auto" is planned as bfloat16 (what it picks on a GPU
    that has it). ``checkpointing`` turns gradient checkpointing on for every stage; a stage whose
    config turns it on is planned with it anyway.
    """
    if dtype is None:
        dtype = getattr(cfg, "dtype", "auto")
        dtype = "bfloat16" if dtype == "auto" else dtype
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    spec = model or cfg.model
    tasks = plan_tasks(cfg)
    if backbone is None:
        config, source = model_config(spec)
        backbone = meta_backbone(config, spec, DTYPES[dtype])
    else:
        source = backbone.model_id
    shape = ModelShape.of(backbone)
    rows = []
    names = list(METHODS) if all_methods else [cfg.method]
    if cfg.method in names:  # the config's own method first
        names.remove(cfg.method)
        names.insert(0, cfg.method)
    for name in names:
        if name == cfg.method:
            args = cfg.method_args
        else:
            own = {f.name for f in dataclasses.fields(method_class(name).config_cls)}
            args = {k: v for k, v in cfg.method_args.items() if k in PROMPT_SHAPE_FIELDS and k in own}
        rows += plan_method(name, args, cfg, backbone, shape, tasks, dtype, checkpointing, answer_tokens)
    return Plan(spec, source, shape, dtype, checkpointing, answer_tokens, tasks, cfg.max_length, rows)


# --- output --------------------------------------------------------------------------------------


def _gib(n: int) -> str:
    return f"{n / GIB:.2f}"


def format_plan(plan: Plan, cfg: RunConfig) -> str:
    """A header and a Markdown table (pastes into docs as it is)."""
    sh = plan.shape
    head = "tied" if sh.tied_embeddings else "untied"
    lines = [
        f"model: {plan.model}",
        f"  shapes from {plan.source}",
        f"  {sh.architecture}: {sh.layers} layers, d={sh.hidden}, {sh.heads} heads ({sh.kv_heads} kv, head dim "
        f"{sh.head_dim}), MLP {sh.intermediate}, vocab {sh.vocab}, {sh.parameters:,} parameters ({head} head)",
        f"setting: {len(plan.tasks)} tasks, max_length {plan.max_length}, batch {cfg.stage1.batch_size} (stage 1) / "
        f"{cfg.train.batch_size} (train), {plan.dtype}, {plan.answer_tokens} answer tokens per example; "
        f"gradient checkpointing: {'every stage' if plan.checkpointing else 'where a stage is marked [ckpt]'}",
        "GPU memory per device in GiB, an estimate (what it counts and ignores: docs/paper-scale.md)",
        "",
        "| method | stage | AdamW groups (parameters) | shared | per task | trainable "
        "| weights | activations | optimizer | total |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in plan.rows:
        if row.memory is None:
            lines.append(f"| {row.method} | - | not planned: {row.not_planned} | | | | | | | |")
            continue
        groups = ", ".join(f"{g['name']} {g['params']:,}" for g in row.groups)
        m, ckpt = row.memory, " [ckpt]" if row.checkpointing else ""
        lines.append(
            f"| {row.method} | {row.stage}{ckpt} | {groups} | {row.shared:,} | {row.per_task:,} | {row.trainable:,} "
            f"| {_gib(m.weights)} | {_gib(m.activations)} | {_gib(m.optimizer)} | {_gib(m.total)} |"
        )
    return "\n".join(lines)
