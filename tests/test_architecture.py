"""Rules of the package's shape that a server and N processes depend on, checked on its source:
no module-level mutable state, configs readable without torch, the reference config in step with
the dataclasses. The layers and the absence of import cycles are import-linter contracts
(pyproject.toml, run by `lint-imports` in `make test`)."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

import talora
from talora.config import RunConfig, TrainConfig, field_help, reference_yaml
from talora.methods import METHODS

PACKAGE = Path(talora.__file__).parent
REPO = PACKAGE.parent
MUTATORS = {
    "append",
    "extend",
    "insert",
    "update",
    "setdefault",
    "pop",
    "popitem",
    "clear",
    "add",
    "discard",
    "remove",
    "__setitem__",
}


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def _is_empty_container(node: ast.expr) -> bool:
    if isinstance(node, (ast.Dict, ast.List, ast.Set)):
        return not (node.keys if isinstance(node, ast.Dict) else node.elts)
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and not node.args
        and node.func.id in ("dict", "list", "set", "defaultdict", "OrderedDict")
    )


def _state_problems(name: str, tree: ast.Module) -> list[str]:
    problems = []
    module_names = set()
    for node in tree.body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign) and node.value is not None
            else []
        )
        for t in targets:
            if isinstance(t, ast.Name):
                module_names.add(t.id)
                if _is_empty_container(node.value):
                    problems.append(f"{name}:{node.lineno}: {t.id} starts empty at module level (a cache or registry)")
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for dec in node.decorator_list:
                text = ast.unparse(dec)
                if "cache" in text:
                    problems.append(f"{name}:{node.lineno}: @{text} keeps results in module state")
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            problems.append(f"{name}:{node.lineno}: global {', '.join(node.names)}")
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        local = {a.arg for a in fn.args.args + fn.args.kwonlyargs}
        for node in ast.walk(fn):
            target = None
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
                for t in node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]:
                    if isinstance(t, (ast.Subscript, ast.Attribute)) and isinstance(t.value, ast.Name):
                        target = t.value.id
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in MUTATORS
                and isinstance(node.func.value, ast.Name)
            ):
                target = node.func.value.id
            if target in module_names and target not in local:
                problems.append(f"{name}:{node.lineno}: function {fn.name} changes module-level {target}")
    return problems


def test_no_module_level_mutable_state():
    problems = [p for name, tree in _modules().items() for p in _state_problems(name, tree)]
    assert not problems, "\n".join(problems)


def test_the_state_rule_catches_a_module_cache():
    tree = ast.parse("_CACHE = {}\n\ndef get(k):\n    _CACHE[k] = 1\n    global X\n")
    assert len(_state_problems("m", tree)) == 3


def test_reading_a_config_does_not_import_torch(tmp_path):
    code = (
        "import sys; from talora.config import read_yaml, from_dict, RunConfig; "
        "from_dict(RunConfig, {'train': {'steps': 3}}); assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


def _config_classes():
    return [
        RunConfig,
        TrainConfig,
        *{cls.config_cls for cls in METHODS.values()},
        *{cls.state_cls for cls in METHODS.values()},
    ]


@pytest.mark.parametrize("cls", _config_classes(), ids=lambda c: c.__name__)
def test_every_config_field_has_its_help(cls):
    helps = field_help(cls)
    assert set(helps) == {f.name for f in dataclasses.fields(cls)}
    assert not [name for name, text in helps.items() if not text], f"{cls.__name__}: fields without help"


def test_reference_config_is_the_dataclasses():
    shipped = (REPO / "configs" / "talora.yaml").read_text()
    assert shipped == reference_yaml(), "configs/talora.yaml is stale: regenerate it with `talora config`"
    for name in METHODS:
        assert f"method: {name}" in shipped or name == "talora"
