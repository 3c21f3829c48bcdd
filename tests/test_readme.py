"""Every ```python block of README.md runs, in order, as one script.

The README shows the embedded model, as a user would load it; here the tiny random Llama stands in
for it (``load_backbone("embedded")`` is redirected, nothing else changes), so the blocks run in
seconds in a scratch folder.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import talora.api
import talora.backbone
import talora.pipeline

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
    real = talora.backbone.load_backbone

    def tiny_for_embedded(spec: str = talora.backbone.EMBEDDED, *args, **kwargs):
        return real("tiny" if spec == talora.backbone.EMBEDDED else spec, *args, **kwargs)

    for module in (talora.backbone, talora.api, talora.pipeline):
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
