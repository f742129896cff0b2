"""The training pieces one by one: row reads, paired examples, loaders, progress, checkpoints."""

import io
import re
import sys

import lightning.pytorch as pl
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader, TensorDataset

from scsena.train import (
    EpochCheckpoint,
    EpochLines,
    PairedPerturbationDataset,
    PerturbationDataModule,
    check_resume,
    dense_rows,
    make_loader,
    progress_callbacks,
)

#: 6 cells x 3 genes; row i is (3i, 3i + 1, 3i + 2), so a row names its cell.
X = np.arange(18, dtype=np.float32).reshape(6, 3)
ROWS = np.array([4, 0, 4, 2, 0])  # unsorted, with repeats


# --------------------------------------------------------------------------- dense_rows


class _Backed:
    """A lazy matrix that, like an HDF5 dataset, only reads sorted unique rows."""

    def __init__(self, matrix, sparse: bool = False):
        self.matrix, self.sparse, self.reads = matrix, sparse, []

    def __getitem__(self, index):
        index = np.asarray(index)
        assert np.all(np.diff(index) > 0), "rows must be read sorted and unique"
        self.reads.append(index.tolist())
        block = self.matrix[index]
        return sp.csr_matrix(block) if self.sparse else block


@pytest.mark.parametrize(
    "matrix",
    [X, sp.csr_matrix(X), sp.csc_matrix(X), sp.csr_array(X), sp.lil_matrix(X)],
    ids=["dense", "csr", "csc", "csr_array", "lil"],
)
def test_dense_rows_reads_rows_in_the_order_asked(matrix):
    out = dense_rows(matrix, ROWS)
    assert isinstance(out, np.ndarray) and out.shape == (5, 3)
    np.testing.assert_array_equal(out, X[ROWS])


@pytest.mark.parametrize("sparse", [False, True])
def test_dense_rows_of_a_lazy_matrix_reads_each_row_once_then_reorders(sparse):
    backed = _Backed(X, sparse=sparse)
    out = dense_rows(backed, ROWS)
    assert backed.reads == [[0, 2, 4]]
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, X[ROWS])


# --------------------------------------------------------------------------- dataset

PERTURBED = np.array([3, 4, 5, 5])
PARTNERS = np.array([0, 1, 0, 2])
CODES = np.array([[0, 0], [0, 0], [1, 2], [1, 2]])
COVARIATES = np.array([[0, 1], [1, 0], [0, 0], [1, 1]])


def _assert_items_equal(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


@pytest.mark.parametrize("matrix", [X, sp.csc_matrix(X)], ids=["dense", "csc"])
def test_paired_dataset_serves_partner_and_perturbed_rows(matrix):
    ds = PairedPerturbationDataset(matrix, PERTURBED, PARTNERS, CODES)
    assert len(ds) == 4 and ds.device is None
    if sp.issparse(matrix):
        assert ds.matrix.format == "csr"  # rows are read from CSR
    item = ds[np.array([2, 0])]
    assert set(item) == {"x", "y", "codes", "index"}
    assert item["x"].dtype == torch.float32 and item["x"].shape == (2, 3)
    np.testing.assert_array_equal(item["x"].numpy(), X[[0, 0]])  # partners of examples 2, 0
    np.testing.assert_array_equal(item["y"].numpy(), X[[5, 3]])  # their perturbed cells
    assert item["codes"].tolist() == [[1, 2], [0, 0]]
    assert item["index"].tolist() == [2, 0]
    one = ds[1]  # a single example is a batch of one
    assert one["x"].shape == (1, 3) and one["y"].tolist() == [X[4].tolist()]


def test_paired_dataset_serves_covariates_only_when_given():
    ds = PairedPerturbationDataset(X, PERTURBED, PARTNERS, CODES, covariates=COVARIATES)
    item = ds[np.array([3, 1])]
    assert item["covariates"].dtype == torch.int64
    assert item["covariates"].tolist() == [[1, 1], [1, 0]]
    assert "covariates" not in PairedPerturbationDataset(X, PERTURBED, PARTNERS, CODES)[0]


@pytest.mark.parametrize("matrix", [X, sp.csr_matrix(X)], ids=["dense", "csr"])
def test_paired_dataset_on_device_serves_the_same_items(matrix):
    host = PairedPerturbationDataset(matrix, PERTURBED, PARTNERS, CODES, covariates=COVARIATES)
    held = PairedPerturbationDataset(matrix, PERTURBED, PARTNERS, CODES, covariates=COVARIATES)
    assert held.to_device("cpu") is held
    assert held.device == torch.device("cpu") and host.device is None
    # it holds the 6 distinct cells the examples use (all here), as float32
    assert held.device_bytes() == 6 * 3 * 4
    for index in ([0], [3, 2, 1, 0], [2, 2]):
        _assert_items_equal(held[np.array(index)], host[np.array(index)])


# --------------------------------------------------------------------------- loaders


def _grouped_dataset(sizes: dict[tuple[int, int], int]) -> PairedPerturbationDataset:
    """Examples of each perturbation (code pair) in ``sizes``, interleaved."""
    codes = np.array([pair for pair, n in sizes.items() for _ in range(n)])
    codes = codes[np.random.default_rng(0).permutation(len(codes))]
    n = len(codes)
    return PairedPerturbationDataset(X, np.arange(n) % 6, np.zeros(n, int), codes)


def _batches(loader) -> list[list[int]]:
    return [batch["index"].tolist() for batch in loader]


def test_make_loader_batches_are_perturbation_pure():
    ds = _grouped_dataset({(0, 0): 5, (1, 0): 3, (1, 2): 4})
    loader = make_loader(ds, batch_size=2, shuffle=True, drop_last=True, seed=0)
    batches = list(loader)
    for batch in batches:
        assert len(batch["index"]) == 2
        assert len(torch.unique(batch["codes"], dim=0)) == 1  # one code pair per batch
        assert batch["codes"].tolist() == ds.codes[batch["index"]].tolist()
    # drop_last drops each perturbation's incomplete chunk: 5 -> 2 batches, 3 -> 1, 4 -> 2
    assert len(batches) == len(loader) == 5
    seen = np.concatenate([b["index"].numpy() for b in batches])
    assert len(set(seen.tolist())) == 10


def test_make_loader_without_drop_last_keeps_every_example_once_in_order():
    ds = _grouped_dataset({(0, 0): 5, (1, 0): 3})
    loader = make_loader(ds, batch_size=2, shuffle=False, drop_last=False, seed=0)
    batches = _batches(loader)
    assert [len(b) for b in batches] == [2, 2, 1, 2, 1] and len(loader) == 5
    first = np.flatnonzero((ds.codes.numpy() == [0, 0]).all(axis=1)).tolist()
    second = np.flatnonzero((ds.codes.numpy() == [1, 0]).all(axis=1)).tolist()
    assert sum(batches, []) == first + second  # no shuffling: groups in order
    assert _batches(loader) == batches  # and the same every epoch


def test_make_loader_order_follows_the_seed():
    ds = _grouped_dataset({(0, 0): 12, (1, 0): 12, (2, 0): 12})

    def epochs(seed):
        loader = make_loader(ds, batch_size=3, shuffle=True, drop_last=True, seed=seed)
        return [_batches(loader) for _ in range(2)]

    first, again, other = epochs(0), epochs(0), epochs(1)
    assert first == again
    assert first != other
    assert first[0] != first[1]  # each epoch is reshuffled
    assert sorted(sum(first[0], [])) == list(range(36))


# --------------------------------------------------------------------------- data module


def test_data_module_serves_shuffled_pure_training_batches():
    train = _grouped_dataset({(0, 0): 7, (1, 0): 4})
    val = _grouped_dataset({(0, 0): 3})
    dm = PerturbationDataModule(train, batch_size=2, seed=3, val_dataset=val)
    assert (dm.n_train, dm.n_val) == (11, 3)
    batches = list(dm.train_dataloader())
    assert len(batches) == 3 + 2  # incomplete chunks dropped
    assert all(len(torch.unique(b["codes"], dim=0)) == 1 for b in batches)
    assert all(b["x"].shape == (2, 3) for b in batches)
    same = list(PerturbationDataModule(train, batch_size=2, seed=3).train_dataloader())
    assert [b["index"].tolist() for b in same] == [b["index"].tolist() for b in batches]
    # validation keeps every example, in order
    assert [b["index"].tolist() for b in dm.val_dataloader()] == [[0, 1], [2]]
    assert PerturbationDataModule(train).val_dataloader() == []


NO_BATCH = (
    "No training batch: every perturbation has fewer than batch_size=8 training cells. "
    "Lower `batch_size`."
)


@pytest.mark.parametrize("sizes", [{}, {(0, 0): 7, (1, 0): 4}], ids=["empty", "small_groups"])
def test_data_module_without_a_full_batch_says_so(sizes):
    ds = (
        _grouped_dataset(sizes)
        if sizes
        else PairedPerturbationDataset(X, [], [], np.zeros((0, 2), int))
    )
    dm = PerturbationDataModule(ds, batch_size=8)
    with pytest.raises(ValueError, match=re.escape(NO_BATCH)):
        dm.train_dataloader()


def test_data_module_refuses_bad_device_settings():
    ds = _grouped_dataset({(0, 0): 4})
    with pytest.raises(ValueError, match="data_on_device must be True, False or 'auto'"):
        PerturbationDataModule(ds, data_on_device="yes")
    with pytest.raises(ValueError, match="set num_workers=0"):
        PerturbationDataModule(ds, data_on_device=True, num_workers=2)


# --------------------------------------------------------------------------- progress


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_callbacks_by_setting_and_stream(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Stream(tty=False))
    kwargs = {}
    (callback,) = progress_callbacks(kwargs)
    assert isinstance(callback, EpochLines)
    assert kwargs == {"enable_progress_bar": False}  # no bar redrawn into a log
    kwargs = {"enable_progress_bar": True}
    assert [type(c) for c in progress_callbacks(kwargs)] == [EpochLines]
    assert kwargs == {"enable_progress_bar": False}
    kwargs = {"enable_progress_bar": False}
    assert progress_callbacks(kwargs) == [] and kwargs == {"enable_progress_bar": False}

    monkeypatch.setattr(sys, "stderr", _Stream(tty=True))
    kwargs = {}
    assert progress_callbacks(kwargs) == [] and kwargs == {}  # scvi-tools' bar is kept
    kwargs = {"enable_progress_bar": False}
    assert progress_callbacks(kwargs) == [] and kwargs == {"enable_progress_bar": False}


class _Tiny(pl.LightningModule):
    """Logs ``loss_train = epoch + 1`` and ``mmd_train = 10 (epoch + 1)``; best epoch fixed."""

    def __init__(self, best_epoch: int = 0):
        super().__init__()
        self.lin = torch.nn.Linear(3, 1)
        self.select_best_epoch = True
        self.best_epoch = best_epoch

    def training_step(self, batch, batch_idx):
        k = float(self.current_epoch + 1)
        self.log("loss_train", k, on_step=False, on_epoch=True)
        self.log("mmd_train", 10 * k, on_step=False, on_epoch=True)
        return self.lin(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.ones(4, 3)), batch_size=2)


def _fit(tmp_path, callbacks, max_epochs=2, module=None):
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        # a Checkpoint callback needs checkpointing on; it then replaces Lightning's own
        enable_checkpointing=any(isinstance(c, EpochCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=callbacks,
    )
    trainer.fit(module or _Tiny())
    return trainer


def test_epoch_lines_prints_one_line_per_finished_epoch(tmp_path):
    stream = io.StringIO()
    _fit(tmp_path, [EpochLines(stream=stream)], max_epochs=3)
    legend, *lines = stream.getvalue().splitlines()
    assert legend.startswith("loss = mse + alpha x mmd + beta x kl")
    assert len(lines) == 3
    for epoch, line in enumerate(lines, start=1):  # epochs counted from 1
        assert re.fullmatch(rf"epoch {epoch}/3  mmd {10 * epoch}  loss {epoch}  \d+\.\d s", line)


# --------------------------------------------------------------------------- checkpoints

TARGETS = ["A", "B"]
GENES = ["g0", "g1", "g2"]


def test_epoch_checkpoint_writes_last_best_and_periodic_files(tmp_path):
    ck = tmp_path / "ck"
    _fit(tmp_path, [EpochCheckpoint(ck, 2, TARGETS, GENES)], max_epochs=3, module=_Tiny(1))
    assert sorted(p.name for p in ck.iterdir()) == ["best.ckpt", "epoch=1.ckpt", "last.ckpt"]

    def read(name):
        return torch.load(ck / name, map_location="cpu", weights_only=False)

    assert read("last.ckpt")["epoch"] == 2
    assert read("best.ckpt")["epoch"] == 1 == read("epoch=1.ckpt")["epoch"]
    assert read("last.ckpt")["scsena"] == {"targets": TARGETS, "var_names": GENES}
    check_resume(ck / "last.ckpt", TARGETS, GENES)  # the same model: accepted


def test_check_resume_refuses_other_targets_or_genes(tmp_path):
    ck = tmp_path / "ck"
    _fit(tmp_path, [EpochCheckpoint(ck, None, TARGETS, GENES)], max_epochs=1)
    last = ck / "last.ckpt"
    assert sorted(p.name for p in ck.iterdir()) == ["best.ckpt", "last.ckpt"]
    targets = (
        f"Checkpoint {str(last)!r} was trained on other targets (2 targets; only in the "
        "checkpoint: ['B'], only in the data: ['C']); resuming would map its intervention "
        "parameters to the wrong targets."
    )
    with pytest.raises(ValueError, match=re.escape(targets)):
        check_resume(last, ["A", "C"], GENES)
    genes = (
        f"Checkpoint {str(last)!r} was trained on other genes or another gene order "
        "(3 genes, the data has 3)."
    )
    with pytest.raises(ValueError, match=re.escape(genes)):
        check_resume(last, TARGETS, GENES[::-1])
    with pytest.raises(ValueError, match=r"\(3 genes, the data has 2\)"):
        check_resume(last, TARGETS, GENES[:2])
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="is not a readable scsena training checkpoint"):
        check_resume(junk, TARGETS, GENES)
