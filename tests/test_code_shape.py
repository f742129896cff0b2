"""The code stays easy to change: short functions, a model class of a few hundred lines."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 80
MAX_MODEL_LINES = 600


def _code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function without its docstring (numpy docstrings document every argument)."""
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
        if isinstance(first.value.value, str):
            lines -= first.end_lineno - first.lineno + 1
    return lines


def long_functions(paths, root: Path = ROOT) -> list[str]:
    out = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = _code_lines(node)
                if n > MAX_FUNCTION_LINES:
                    out.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_no_function_over_80_lines_of_code():
    paths = sorted((ROOT / "src").rglob("*.py")) + sorted((ROOT / "benchmarks").rglob("*.py"))
    assert not long_functions(paths), "split these functions:\n" + "\n".join(long_functions(paths))


def test_the_check_counts_code_not_docstrings(tmp_path):
    doc = "\n".join(["    '''Doc."] + ["    more"] * 100 + ["    '''"])
    body = "\n".join(["    x = 1"] * 79)
    short = tmp_path / "short.py"
    short.write_text(f"def f():\n{doc}\n{body}\n")
    long = tmp_path / "long.py"
    long.write_text(f"def g():\n{body}\n    x = 2\n    x = 3\n")
    found = [line.split()[1] for line in long_functions([short, long], root=tmp_path)]
    assert found == ["g"]


def test_model_class_module_is_a_few_hundred_lines():
    n = len((ROOT / "src" / "scsena" / "model" / "_model.py").read_text().splitlines())
    assert n < MAX_MODEL_LINES
