import importlib
import inspect
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"

PUBLIC_MODULES = [
    "scsena",
    "scsena.model",
    "scsena.gene_sets",
    "scsena.datasets",
    "scsena.metrics",
    "scsena.evaluate",
    "scsena.readouts",
    "scsena.tracking",
    "scsena.pl",
    "scsena.module",
    "scsena.train",
    "scsena.dataloaders",
    "scsena.cli",
]


def _public_names(name: str) -> list[str]:
    mod = importlib.import_module(name)
    if hasattr(mod, "__all__"):
        names = list(mod.__all__)
    else:  # functions and classes defined in the module itself
        names = [
            n
            for n, obj in vars(mod).items()
            if not n.startswith("_")
            and (inspect.isfunction(obj) or inspect.isclass(obj))
            and obj.__module__ == name
        ]
    return [
        n for n in names if not n.startswith("__") and not inspect.ismodule(getattr(mod, n, None))
    ]


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_api_page_lists_every_public_name(module):
    api = (DOCS / "api.md").read_text()
    missing = [n for n in _public_names(module) if not re.search(rf"\b{re.escape(n)}\b", api)]
    assert not missing, f"docs/api.md does not document {module}: {missing}"


@pytest.mark.slow
def test_docs_build_offline_with_warnings_as_errors(tmp_path):
    """The Sphinx site builds offline, tutorials executed, with -W."""
    env = dict(os.environ)
    env.pop("SCSENA_DOCS_INTERSPHINX", None)
    env["SCSENA_DOCS_EXECUTE"] = "cache"  # cache in tmp_path: a fresh execution
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(tmp_path / "html"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    took = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-6000:]
    html = tmp_path / "html"
    for page in ("index", "method", "api", "cli", "getting_started"):
        assert (html / f"{page}.html").exists()
    for nb in ("quickstart", "interpretation", "own_data"):
        text = (html / "tutorials" / f"{nb}.html").read_text()
        assert "<img" in text or nb == "own_data"
        assert "Traceback" not in text
    print(f"docs built in {took:.0f} s")


def test_import_in_a_notebook_prints_no_tqdm_widget_advice():
    """scvi-tools' ``tqdm.auto`` import warns in a kernel without ipywidgets; scsena hides it."""
    code = "\n".join(
        [
            "import sys, types, warnings",
            "warnings.simplefilter('always')",
            "sys.modules['ipykernel.zmqshell'] = types.ModuleType('ipykernel.zmqshell')",
            "ipy = types.ModuleType('IPython'); ipy.get_ipython = lambda: None",
            "sys.modules.setdefault('IPython', ipy)",
            "import scsena",
            "import tqdm.auto",
        ]
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "IProgress not found" not in proc.stderr
