"""Sphinx configuration of the scsena documentation.

Build offline with warnings as errors::

    sphinx-build -W -b html docs docs/_build/html

Tutorials (``tutorials/*.md``, MyST-NB notebooks) are executed at build time and
cached in ``docs/_build/.jupyter_cache``. Set ``SCSENA_DOCS_INTERSPHINX=1`` to link to
the Python, NumPy, AnnData, scanpy, scvi-tools, PyTorch and Lightning docs (needs the
network).
"""

from __future__ import annotations

import os
import sys
from datetime import date
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from docutils import nodes
from sphinx.transforms import SphinxTransform

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

# The tutorials run as a user runs them: torch threads are left to SENAVAE.train's own
# choice (threads="auto": the cores other work leaves free).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

project = "scsena"
author = "scsena developers"
copyright = f"{date.today().year}, {author}"
try:
    release = version("scsena")
except PackageNotFoundError:  # building from a source tree without installing
    release = "0.0.0"
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinxarg.ext",
]
try:  # MathJax served with the pages, not from a CDN: maths renders offline
    import importlib

    importlib.import_module("sphinx-mathjax-offline")
    extensions.append("sphinx-mathjax-offline")
except ImportError:
    pass
try:  # optional niceties, present with the `docs` extra
    import sphinx_copybutton  # noqa: F401

    extensions.append("sphinx_copybutton")
except ImportError:
    pass

templates_path = ["_templates"]
exclude_patterns = ["_build", "jupyter_execute", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
master_doc = "index"
# every cross-reference to scsena must resolve (a broken one fails the -W build);
# references to other packages' types resolve only with intersphinx (network), so the
# signatures' and docstrings' external types are not checked offline
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(anndata|pandas|numpy|np|pd|ad|torch|scipy|sp|scvi|lightning|mudata|"
     r"matplotlib|collections|typing|pathlib|os|argparse|decoupler|scanpy|sc)\b.*"),
    (r"py:.*", r"(AnnData|MuData|DataFrame|Series|Index|ndarray|Tensor|Figure|Axes|Path|"
     r"Generator|Module|Callback|Logger|MLFlowLogger|spmatrix|csr_matrix|ArrayLike|"
     r"Sequence|Mapping|Iterable|Iterator|Callable|Literal|Any|optional|callable|"
     r"array-like|array_like|default|TextIO|PathLike|BaseException|LossOutput|"
     r"TrainingPlan|BaseModuleClass|BaseModelClass|AnnDataManager|Checkpoint|"
     r"BaseAnnDataField|LightningDataModule|DataLoader|Sampler|Dataset)\b.*"),
    (r"py:class", r"(int|float|str|bool|list|dict|tuple|set|None|bytes|object|type)\b.*"),
    (r"py:.*", r"(rich|networkx|summary_stats_dict|state_registry_summary)\b.*"),
    # private base classes (the model's mixins) are documented through the model
    (r"py:class", r"scsena(\.\w+)*\._\w+.*"),
    # a "Returns" section holding only a sentence: napoleon reads it as a type
    (r"py:class", r".*[^\w.\[\]].*|\."),
]
default_role = "literal"
# the table of contents lists the pages' headings and the API tables, not every
# documented object (constants, attributes)
toc_object_entries = False
smartquotes = False  # keep `--data` and quotes as typed (no en dashes in option names)

# Pages other parts of the project write next to these (benchmarks, results,
# reliability): index.md lists them, and a missing one is dropped from the toctree.
OPTIONAL_PAGES = ("benchmarks", "results", "reliability")


def _drop_missing_pages(app, docname, source):
    if docname != "index":
        return
    for page in OPTIONAL_PAGES:
        if not (HERE / f"{page}.md").exists() and not (HERE / f"{page}.ipynb").exists():
            source[0] = source[0].replace(f"\n{page}\n", "\n")


class _NoBareEmailLinks(SphinxTransform):
    """Keep ``recall@25`` and ``GO:0060333`` as text: reST links a bare ``name@domain``
    as an e-mail address and ``GO:...`` as a URI."""

    default_priority = 500

    def apply(self, **kwargs) -> None:
        for ref in list(self.document.findall(nodes.reference)):
            text = ref.astext()
            uri = ref.get("refuri", "")
            bare_email = uri == f"mailto:{text}" and "." not in text.partition("@")[2]
            # a GO id (GO:0060333) in help text is read as a URI of scheme "GO"
            go_id = uri == text and uri.upper().startswith("GO:")
            if bare_email or go_id:
                ref.replace_self(nodes.Text(text))


def setup(app):
    app.connect("source-read", _drop_missing_pages)
    app.add_transform(_NoBareEmailLinks)


# --- autodoc / autosummary / napoleon
def _own_members() -> dict[str, list[str]]:
    """Per public class: the members scsena defines (its mixins included), so the API
    page lists the model's methods and leaves out what scvi-tools or torch define."""
    import importlib
    import inspect

    out = {}
    for mod_name in ("scsena", "scsena.data", "scsena.train", "scsena.module", "scsena.dataloaders",
                     "scsena.gene_sets", "scsena.evaluate", "scsena.readouts", "scsena.metrics"):
        mod = importlib.import_module(mod_name)
        for name in getattr(mod, "__all__", []):
            cls = getattr(mod, name, None)
            if not inspect.isclass(cls) or not cls.__module__.startswith("scsena"):
                continue
            own = []
            for member in dir(cls):
                owner = next((c for c in cls.__mro__ if member in vars(c)), None)
                if owner is not None and owner.__module__.startswith("scsena"):
                    own.append(member)
            out[f"{mod_name}.{name}"] = own
    return out


autosummary_context = {"scsena_own": _own_members()}
autosummary_generate = True
autosummary_imported_members = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_default_options = {"show-inheritance": False}
autodoc_mock_imports: list[str] = []
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = True
napoleon_use_param = True
napoleon_use_ivar = True
napoleon_custom_sections = [("Params", "Parameters")]

# --- MyST / MyST-NB
myst_enable_extensions = ["amsmath", "colon_fence", "deflist", "dollarmath", "html_image"]
myst_heading_anchors = 3
nb_execution_mode = os.environ.get("SCSENA_DOCS_EXECUTE", "cache")
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
nb_output_stderr = "show"  # what a notebook user sees, warnings included

# --- intersphinx: off unless asked for (it needs the network; offline -W builds must pass)
intersphinx_mapping: dict[str, tuple[str, None]] = {}
if os.environ.get("SCSENA_DOCS_INTERSPHINX", "0") not in ("", "0", "false", "False"):
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "pandas": ("https://pandas.pydata.org/docs", None),
        "scipy": ("https://docs.scipy.org/doc/scipy", None),
        "anndata": ("https://anndata.readthedocs.io/en/stable", None),
        "mudata": ("https://mudata.readthedocs.io/en/latest", None),
        "scanpy": ("https://scanpy.readthedocs.io/en/stable", None),
        "scvi": ("https://docs.scvi-tools.org/en/stable", None),
        "torch": ("https://pytorch.org/docs/stable", None),
        "lightning": ("https://lightning.ai/docs/pytorch/stable", None),
        "matplotlib": ("https://matplotlib.org/stable", None),
        "networkx": ("https://networkx.org/documentation/stable", None),
    }

# --- HTML
try:
    import sphinx_book_theme  # noqa: F401

    html_static_path = ["_static"]
    html_css_files = ["scsena.css"]
    html_theme = "sphinx_book_theme"
    html_theme_options = {
        "navigation_with_keys": False,
        "show_toc_level": 2,
    }
except ImportError:  # pragma: no cover - fallback theme
    html_theme = "alabaster"
html_title = "scsena"
html_show_sourcelink = False
