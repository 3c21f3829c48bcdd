"""Every ```python block of README.md runs, in order, as one script; every talora command in its
```bash blocks parses, with the files it names.

The README shows the embedded model, as a user would load it; here the tiny random Llama stands in
for it (``load_backbone("embedded")`` is redirected, nothing else changes), so the blocks run in
seconds in a scratch folder.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

import talora.api
import talora.core.backbone
import talora.recipes.pipeline

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, code) of each ```python block."""
    return [(text[: m.start(1)].count("\n") + 1, m.group(1)) for m in BLOCK.finditer(text)]


def test_the_blocks_are_found():
    text = "x\n```python\na = 1\n```\n```bash\nls\n```\n```python\nb = 2\n```\n"
    assert python_blocks(text) == [(3, "a = 1\n"), (9, "b = 2\n")]


@pytest.mark.filterwarnings("ignore:'pin_memory' argument")  # the Trainer's default, on a machine without GPU
def test_readme_python_blocks_run(tiny_models, monkeypatch):
    real = talora.core.backbone.load_backbone

    def tiny_for_embedded(spec: str = talora.core.backbone.EMBEDDED, *args, **kwargs):
        return real("tiny" if spec == talora.core.backbone.EMBEDDED else spec, *args, **kwargs)

    for module in (talora.core.backbone, talora.api, talora.recipes.pipeline):
        monkeypatch.setattr(module, "load_backbone", tiny_for_embedded)
    text = README.read_text(encoding="utf-8")
    blocks = python_blocks(text)
    assert blocks, "README.md has no python blocks"
    assert text.index("## The command line") < text.index("## Python API") < text.index("## Methods")
    namespace: dict = {"__name__": "__readme__"}
    for line, code in blocks:
        # Padded to its place in the file, a failing block's traceback shows README.md's own lines.
        exec(compile("\n" * (line - 1) + code, str(README), "exec"), namespace)
    assert Path("my-adapter/adapter.json").is_file() and Path("runs/api-pt/metrics.json").is_file()


SHELL = re.compile(r"^```bash\n(.*?)^```", re.DOTALL | re.MULTILINE)
ROOT = README.parent
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*")  # DIR, T, K, FILE: a value the reader fills in


def shell_commands(text: str) -> list[tuple[int, list[str]]]:
    """(line number, argv after ``talora``) of every talora command in the ```bash blocks.

    Continuation lines are joined and comments dropped; ``torchrun``/``accelerate launch``
    lines yield the talora part after ``-m talora``."""
    out = []
    for m in SHELL.finditer(text):
        first = text[: m.start(1)].count("\n") + 1
        logical, start = "", first
        for i, line in enumerate(m.group(1).splitlines()):
            if not logical:
                start = first + i
            logical += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
            if line.endswith("\\"):
                continue
            argv = shlex.split(logical, comments=True)
            logical = ""
            if "-m" in argv and argv[argv.index("-m") + 1 : argv.index("-m") + 2] == ["talora"]:
                argv = argv[argv.index("-m") + 2 :]
            elif argv and Path(argv[0]).name == "talora":
                argv = argv[1:]
            else:
                continue
            out.append((start, argv))
    return out


def test_shell_commands_are_found():
    text = "```bash\nmake x\n.venv/bin/talora eval --adapter a \\\n    --task t   # c\ntorchrun -m talora train\n```\n"
    assert shell_commands(text) == [(3, ["eval", "--adapter", "a", "--task", "t"]), (5, ["train"])]


def _synopsis(argv: list[str]) -> bool:
    """A line that shows a command's shape (placeholders, alternatives) rather than a runnable call."""
    return any(
        a.startswith("[-")
        or "|" in a
        or a.endswith("...")
        or PLACEHOLDER.fullmatch(a)
        or a.startswith(("CFG", "SWEEP"))
        for a in argv
    )


def test_readme_shell_commands_parse_and_name_real_files():
    """Every talora command the README shows is one the CLI accepts, with the files it names.

    The commands train for minutes to hours on real data, so they are not run here; what a
    reader can get wrong by copying them is checked instead: the subcommand and options exist,
    overrides name real config fields, and every config, sweep and suite file is in the
    repository and loads."""
    from talora.cli import build_parser
    from talora.config import load_config
    from talora.overrides import parse_overrides
    from talora.recipes.sweep import load_sweep

    commands = shell_commands(README.read_text(encoding="utf-8"))
    assert len(commands) > 20
    parser = build_parser()
    subcommands = set(parser._subparsers._group_actions[0].choices)
    for line, argv in commands:
        where = f"README.md:{line}: talora {' '.join(argv)}"
        assert argv and argv[0] in subcommands, where
        if _synopsis(argv):
            continue
        args, extras = parser.parse_known_args(argv)
        overrides = parse_overrides(extras) if args.takes_overrides else {}
        assert args.takes_overrides or not extras, where
        config = getattr(args, "config", None)
        if config is None:
            continue
        assert (ROOT / config).is_file(), f"{where}: {config} is not in the repository"
        if args.command == "sweep":
            load_sweep(ROOT / config, overrides=overrides)
        elif args.command in ("train", "transfer", "plan"):
            load_config(ROOT / config, overrides)
