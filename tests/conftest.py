import os
import signal
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
warnings.filterwarnings("ignore", category=UserWarning, module="lightning")

import scsena  # noqa: E402

# a job started in the background of a non-interactive shell inherits an ignored SIGINT,
# and Python then installs no KeyboardInterrupt handler: restore it, as a terminal has it
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

SIM_KW = dict(n_cells=1600, n_genes=300, n_targets=8, n_doubles=4, seed=0)
TRAIN_KW = dict(
    max_epochs=25,
    batch_size=32,
    enable_progress_bar=False,
    enable_model_summary=False,
    logger=False,
    enable_checkpointing=False,
)


@pytest.fixture(scope="session")
def _sim():
    return scsena.datasets.simulate_perturbseq(**SIM_KW)


@pytest.fixture
def sim_adata(_sim):
    """A fresh copy of a small simulated screen (1,600 cells x 300 genes)."""
    return _sim.copy()


@pytest.fixture(scope="session")
def trained(_sim):
    """A model trained briefly on the small simulated screen, with its data and the
    double-fold MMD before training."""
    adata = _sim.copy()
    scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids")
    model = scsena.SENAVAE(adata, seed=0)
    before = model.get_fold_losses("double")
    model.train(**TRAIN_KW)
    return model, adata, before


def pertpy_style(seed: int, n_cells: int, n_targets: int, n_doubles: int, epochs: int):
    """A simulated screen with pertpy's labels ("control", "A", "A+B") and a model on it."""
    adata = scsena.datasets.simulate_perturbseq(
        n_cells=n_cells, n_genes=200, n_targets=n_targets, n_doubles=n_doubles, seed=seed
    )
    labels = adata.obs["guide_ids"].astype(str)
    adata.obs["perturbation"] = labels.replace({"": "control"}).str.replace(",", "+")
    scsena.SENAVAE.setup_anndata(
        adata, perturbation_key="perturbation", control_value="control", delimiter="+"
    )
    model = scsena.SENAVAE(adata, seed=0)
    model.train(**(TRAIN_KW | {"max_epochs": epochs}))
    return model, adata


@pytest.fixture(autouse=True)
def _nothing_written_to_cwd():
    """No test may create a file in the current directory."""
    before = set(os.listdir())
    yield
    assert set(os.listdir()) == before, "a test wrote into the current directory"


class Payload:
    """Unpickling this creates ``path``: stands for any code a pickle can run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').close()",))


_GENES = None


def toy_adata(n_genes=60, labels=None, X=None, seed=0):
    """A small AnnData with real Ensembl IDs (so the GO mask overlaps)."""
    global _GENES
    if _GENES is None:
        sets = scsena.gene_sets.go_bp(terms="sena")
        big = sorted(sets, key=lambda t: -len(sets[t]))[:8]
        _GENES = sorted({g for t in big for g in sets[t]})
    rng = np.random.default_rng(seed)
    genes = _GENES[:n_genes]
    if labels is None:
        labels = [""] * 40 + ["A"] * 40 + ["B"] * 40 + ["A,B"] * 20
    if X is None:
        X = np.log1p(rng.poisson(2.0, size=(len(labels), len(genes))).astype(np.float32))
    return ad.AnnData(
        X=X,
        obs=pd.DataFrame({"guide_ids": labels}, index=[f"c{i}" for i in range(len(labels))]),
        var=pd.DataFrame(index=genes),
    )
