"""Packages talk to each other through public names only.

A private name (``_x``) may be used inside the package that defines it (``scsena``'s
private modules anywhere in ``scsena``; ``scsena.train._data`` only inside
``scsena.train``). Everything else, tests and benchmarks included, uses public names.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"src": ROOT / "src", "benchmarks": ROOT / "benchmarks", "tests": ROOT / "tests"}
#: Private names used on purpose: (module, attribute or imported dotted name).
ALLOWED = {
    # argparse has no public way to list a parser's actions and sub-parsers
    *(
        (f"scsena.cli.{m}", name)
        for m in ("_activity", "_common", "_demo", "_evaluate", "_train")
        for name in ("_SubParsersAction", "_StoreTrueAction", "_actions")
    ),
    ("tests.cli.test_cli", "_actions"),
    ("tests.cli.test_cli", "_SubParsersAction"),
}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _module_name(path: Path) -> str:
    for kind, base in SOURCES.items():
        if base in path.parents:
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            return ".".join(parts) if kind == "src" else f"{kind}.{'.'.join(parts)}"
    raise AssertionError(path)


def _owner(dotted: str) -> str | None:
    """The package that may use ``dotted``: the path before its first private part."""
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if _private(part):
            return ".".join(parts[:i])
    return None


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _package(module: str) -> str:
    """The package whose private names a module may use: ``scsena.<sub>`` or itself."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "scsena" else module


def _files():
    for base in SOURCES.values():
        yield from sorted(p for p in base.rglob("*.py") if ".venv" not in p.parts)


def _defined_names(tree: ast.AST) -> set[str]:
    """Private names a file defines: functions, classes, attributes and variables."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return {n for n in names if _private(n)}


def _import_violations(module: str, tree: ast.AST) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for dotted in targets:
            owner = _owner(dotted)
            if (module, dotted) in ALLOWED:
                continue
            if dotted.startswith("scsena") and owner is not None and not _inside(module, owner):
                out.append(f"{module}:{node.lineno} imports {dotted}")
    return out


def _attribute_violations(module: str, tree: ast.AST, defined: set[str]) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not _private(node.attr):
            continue
        value = node.value
        if isinstance(value, ast.Name) and value.id in ("self", "cls"):
            continue
        if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "super":
            continue
        if node.attr in defined or (module, node.attr) in ALLOWED:
            continue
        out.append(f"{module}:{node.lineno} uses .{node.attr}")
    return out


def test_no_module_uses_another_packages_private_names():
    trees = {_module_name(p): ast.parse(p.read_text(), str(p)) for p in _files()}
    defined: dict[str, set[str]] = {}
    for module, tree in trees.items():
        defined.setdefault(_package(module), set()).update(_defined_names(tree))
    problems = []
    for module, tree in trees.items():
        problems += _import_violations(module, tree)
        problems += _attribute_violations(module, tree, defined[_package(module)])
    assert not problems, "private names used across packages:\n" + "\n".join(problems)


def test_the_check_catches_private_imports_and_attributes():
    tree = ast.parse(
        "from scsena.model._model import x\nimport scsena.train._data\n"
        "from scsena._perturbations import y\nmodel._parse(adata)\n"
    )
    found = _import_violations("scsena.pl", tree)
    assert found == ["scsena.pl:1 imports scsena.model._model.x"] + [
        "scsena.pl:2 imports scsena.train._data"
    ]
    assert len(_import_violations("tests.test_x", tree)) == 3
    assert _import_violations("scsena.model._fields", tree) == [
        "scsena.model._fields:2 imports scsena.train._data"
    ]
    assert _attribute_violations("tests.test_x", tree, set()) == ["tests.test_x:4 uses ._parse"]


#: Sub-packages whose public functions and classes each need a test that names them.
TESTED_PACKAGES = (
    "scsena.data",
    "scsena.dataloaders",
    "scsena.datasets",
    "scsena.gene_sets",
    "scsena.metrics",
    "scsena.evaluate",
    "scsena.pl",
    "scsena.tracking",
    "scsena.module",
    "scsena.train",
    "scsena.model",
    "scsena.cli",
)


def _public_callables() -> list[tuple[str, str]]:
    import importlib
    import inspect

    out = []
    for name in TESTED_PACKAGES:
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", [a for a in dir(module) if not _private(a)]):
            obj = getattr(module, attr, None)
            if callable(obj) and not inspect.ismodule(obj):
                if (getattr(obj, "__module__", None) or "").startswith("scsena"):
                    out.append((name, attr))
    return out


def test_every_public_function_and_method_is_named_in_a_test():
    """A public function no test calls is untested: name it in a behavioural test."""
    import inspect
    import re

    import scsena

    tests = "\n".join(
        p.read_text() for p in SOURCES["tests"].rglob("*.py") if p.name != "test_public_api.py"
    )
    missing = [f"{m}.{a}" for m, a in _public_callables() if not re.search(rf"\b{a}\b", tests)]
    for attr, obj in inspect.getmembers(scsena.SENAVAE):
        if _private(attr) or not callable(obj):
            continue
        ours = (getattr(obj, "__module__", None) or "").startswith("scsena")
        if ours and f".{attr}(" not in tests:
            missing.append(f"SENAVAE.{attr}")
    assert not missing, "public names no test calls:\n" + "\n".join(missing)
