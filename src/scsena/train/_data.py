"""Paired, perturbation-pure mini-batches.

A training example is a triple ``(x, y, c)``: ``y`` a perturbed cell, ``c`` its
perturbation (target indices) and ``x`` a control cell drawn at random for that
example, once, when the examples are built. Batches are perturbation-pure: the
sampler groups examples by perturbation, shuffles each group, cuts it into chunks
of ``batch_size``, drops each group's incomplete last chunk and shuffles the list of
chunks. A batch is read with one fancy-indexing call on the (sparse) expression
matrix, never cell by cell.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Literal

import lightning.pytorch as pl
import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from scsena._constants import TENSORS


def draw_control_partners(
    n_examples: int,
    control_indices: np.ndarray,
    seed: int,
    groups: np.ndarray | None = None,
    control_groups: np.ndarray | None = None,
) -> np.ndarray:
    """Draw one control cell per example, uniformly with replacement.

    Parameters
    ----------
    n_examples
        Number of examples to pair.
    control_indices
        Cell positions of the control cells.
    seed
        Seed of the draw.
    groups, control_groups
        The group (e.g. the batch) of every example and of every control cell: an
        example's partner is drawn among the control cells of its own group.
        ``None``: one group.

    Raises
    ------
    ValueError
        When a group of the examples has no control cell.
    """
    rng = np.random.default_rng(seed)
    control_indices = np.asarray(control_indices)
    if groups is None:
        return control_indices[rng.integers(0, len(control_indices), size=n_examples)]
    groups, control_groups = np.asarray(groups), np.asarray(control_groups)
    partners = np.empty(n_examples, dtype=control_indices.dtype)
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        pool = control_indices[control_groups == group]
        if len(pool) == 0:
            raise ValueError(
                f"Group {group!r} has {len(members)} perturbed cells but no control cell to "
                "pair them with."
            )
        partners[members] = pool[rng.integers(0, len(pool), size=len(members))]
    return partners


class PerturbationPureBatchSampler(Sampler[np.ndarray]):
    """Yield arrays of example indices, each batch from a single perturbation.

    Parameters
    ----------
    groups
        Group label (e.g. integer perturbation id) of every example.
    batch_size
        Examples per batch.
    shuffle
        Shuffle within groups and the order of the chunks (training); otherwise keep
        the order (evaluation).
    drop_last
        Drop each group's incomplete last chunk (the reference does during training).
    seed
        Seed; the permutation of epoch ``e`` uses ``seed + e`` so runs are reproducible
        and resumable.
    num_replicas, rank
        For distributed data parallel training: each process takes every
        ``num_replicas``-th chunk starting at ``rank`` (chunks are padded by repetition
        so all ranks see the same number of batches).
    """

    def __init__(
        self,
        groups: np.ndarray,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.groups = np.asarray(groups)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = int(seed)
        self.epoch = 0
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        order = np.argsort(self.groups, kind="stable")
        _, starts = np.unique(self.groups[order], return_index=True)
        self._members = np.split(order, starts[1:]) if len(order) else []

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (changes the shuffling)."""
        self.epoch = int(epoch)

    def _chunks(self) -> list[np.ndarray]:
        rng = np.random.default_rng(self.seed + self.epoch)
        chunks: list[np.ndarray] = []
        for members in self._members:
            idx = rng.permutation(members) if self.shuffle else members
            n_full = len(idx) // self.batch_size
            stop = n_full * self.batch_size if self.drop_last else len(idx)
            chunks.extend(idx[i : i + self.batch_size] for i in range(0, stop, self.batch_size))
        if self.shuffle and chunks:
            perm = rng.permutation(len(chunks))
            chunks = [chunks[i] for i in perm]
        if self.num_replicas > 1 and chunks:
            per_rank = -(-len(chunks) // self.num_replicas)
            chunks = (chunks * self.num_replicas)[: per_rank * self.num_replicas]
            chunks = chunks[self.rank :: self.num_replicas]
        return chunks

    def __iter__(self) -> Iterator[np.ndarray]:
        chunks = self._chunks()
        if self.shuffle:
            # the next epoch reshuffles even when nobody calls set_epoch
            self.epoch += 1
        return iter(chunks)

    def __len__(self) -> int:
        sizes = [len(m) for m in self._members]
        if self.drop_last:
            n = sum(s // self.batch_size for s in sizes)
        else:
            n = sum(-(-s // self.batch_size) for s in sizes)
        if self.num_replicas > 1 and n:
            n = -(-n // self.num_replicas)
        return n


def dense_rows(matrix, index: np.ndarray) -> np.ndarray:
    """Rows ``index`` of a dense, CSR/CSC or backed matrix, as a dense array.

    Parameters
    ----------
    matrix
        Cells x genes matrix (NumPy, SciPy sparse or an AnnData backed array).
    index
        Integer row positions (repeats allowed).

    Returns
    -------
    ``(len(index), n_genes)`` array.
    """
    if sp.issparse(matrix):
        return matrix[index].toarray()
    if isinstance(matrix, np.ndarray):
        return matrix[index]
    # backed / lazy arrays: read sorted unique rows, then reorder
    uniq, inverse = np.unique(index, return_inverse=True)
    block = matrix[uniq]
    block = block.toarray() if sp.issparse(block) else np.asarray(block)
    return block[inverse]


def _dense_rows_on(matrix, rows: np.ndarray, device, dtype, chunk: int = 16384) -> torch.Tensor:
    """``matrix[rows]`` as a dense tensor on ``device``, built chunk by chunk.

    Sparse chunks travel as CSR and are densified on the device, so the host never
    holds more than one chunk densely.
    """
    n_genes = matrix.shape[1]
    out = torch.empty(len(rows), n_genes, dtype=dtype, device=device)
    for start in range(0, len(rows), chunk):
        idx = rows[start : start + chunk]
        if sp.issparse(matrix):
            block = sp.csr_matrix(matrix[idx])
            with warnings.catch_warnings():  # "sparse CSR support is in beta state"
                warnings.simplefilter("ignore", UserWarning)
                part = torch.sparse_csr_tensor(
                    torch.as_tensor(block.indptr, dtype=torch.int64),
                    torch.as_tensor(block.indices, dtype=torch.int64),
                    torch.as_tensor(block.data, dtype=dtype),
                    size=block.shape,
                ).to(device)
                part = part.to_dense()
        else:
            part = torch.as_tensor(dense_rows(matrix, idx), dtype=dtype).to(device)
        out[start : start + len(idx)] = part
    return out


class PairedPerturbationDataset(Dataset):
    """Examples ``(x, y, codes)`` addressed by arrays of example indices.

    Parameters
    ----------
    matrix
        ``cells x genes`` expression (dense array, scipy sparse, or backed dataset).
    perturbed
        Cell index of the perturbed cell ``y`` of every example.
    partners
        Cell index of the control partner ``x`` of every example.
    codes
        ``(n_examples, 2)`` target indices of every example.
    dtype
        Torch dtype of the returned expression tensors.
    covariates
        ``(n_examples, k)`` categorical covariate codes of every example's control
        partner (served as ``"covariates"``); ``None``: no covariates.
    """

    def __init__(
        self,
        matrix,
        perturbed: np.ndarray,
        partners: np.ndarray,
        codes: np.ndarray,
        dtype: torch.dtype = torch.float32,
        covariates: np.ndarray | None = None,
    ):
        if sp.issparse(matrix) and matrix.format != "csr":
            matrix = matrix.tocsr()
        self.matrix = matrix
        self.perturbed = np.asarray(perturbed, dtype=np.int64)
        self.partners = np.asarray(partners, dtype=np.int64)
        self.codes = torch.as_tensor(np.asarray(codes, dtype=np.int64))
        self.covariates = (
            None if covariates is None else torch.as_tensor(np.asarray(covariates, np.int64))
        )
        self.dtype = dtype
        self._on_device: dict[str, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.perturbed)

    # -- device-resident copy -------------------------------------------------
    def _used_rows(self) -> np.ndarray:
        return np.unique(np.concatenate([self.perturbed, self.partners]))

    def device_bytes(self) -> int:
        """Bytes a dense device-resident copy of the cells it uses would take."""
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        return len(self._used_rows()) * self.matrix.shape[1] * itemsize

    @property
    def device(self) -> torch.device | None:
        """Device holding the expression rows, or ``None`` when they are read from the host."""
        return None if self._on_device is None else self._on_device["rows"].device

    def to_device(self, device: torch.device | str) -> PairedPerturbationDataset:
        """Hold the cells it uses as a dense tensor on ``device``.

        A batch is then gathered on the device: only the batch's example indices
        travel from the host each step. Returns ``self``.
        """
        device = torch.device(device)
        rows = self._used_rows()
        position = np.full(int(rows[-1]) + 1 if len(rows) else 0, -1, dtype=np.int64)
        position[rows] = np.arange(len(rows))
        self._on_device = {
            "rows": _dense_rows_on(self.matrix, rows, device, self.dtype),
            "perturbed": torch.as_tensor(position[self.perturbed], device=device),
            "partners": torch.as_tensor(position[self.partners], device=device),
            "codes": self.codes.to(device),
        }
        if self.covariates is not None:
            self._on_device["covariates"] = self.covariates.to(device)
        return self

    def __getitem__(self, index) -> dict[str, torch.Tensor]:
        index = np.atleast_1d(np.asarray(index, dtype=np.int64))
        host_index = torch.as_tensor(index)
        if self._on_device is not None:
            d = self._on_device
            i = host_index.to(d["rows"].device, non_blocking=True)
            out = {
                TENSORS.X_CONTROL: d["rows"][d["partners"][i]],
                TENSORS.Y: d["rows"][d["perturbed"][i]],
                TENSORS.CODES: d["codes"][i],
                TENSORS.INDEX: host_index,
            }
            if "covariates" in d:
                out[TENSORS.COVARIATES] = d["covariates"][i]
            return out
        x = dense_rows(self.matrix, self.partners[index])
        y = dense_rows(self.matrix, self.perturbed[index])
        out = {
            TENSORS.X_CONTROL: torch.as_tensor(x, dtype=self.dtype),
            TENSORS.Y: torch.as_tensor(y, dtype=self.dtype),
            TENSORS.CODES: self.codes[host_index],
            TENSORS.INDEX: host_index,
        }
        if self.covariates is not None:
            out[TENSORS.COVARIATES] = self.covariates[host_index]
        return out


def group_ids(codes: np.ndarray) -> np.ndarray:
    """Integer id of the perturbation (the pair of target indices) of every example."""
    _, inverse = np.unique(np.asarray(codes), axis=0, return_inverse=True)
    return inverse.ravel()


def make_loader(
    dataset: PairedPerturbationDataset,
    batch_size: int,
    shuffle: bool,
    drop_last: bool,
    seed: int,
    num_workers: int = 0,
    num_replicas: int = 1,
    rank: int = 0,
) -> DataLoader:
    """A :class:`~torch.utils.data.DataLoader` over perturbation-pure batches."""
    sampler = PerturbationPureBatchSampler(
        group_ids(dataset.codes.numpy()),
        batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        seed=seed,
        num_replicas=num_replicas,
        rank=rank,
    )
    return DataLoader(
        dataset,
        sampler=sampler,
        batch_size=None,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        # its own generator: creating an iterator must not draw from the global RNG,
        # which drives the sampling noise (resumed runs repeat uninterrupted ones)
        generator=torch.Generator().manual_seed(seed),
    )


class PerturbationDataModule(pl.LightningDataModule):
    """Lightning data module serving SENA's paired, perturbation-pure batches.

    Parameters
    ----------
    train_dataset
        Training examples.
    batch_size
        Batch size (reference 32).
    seed
        Seed of the batch order.
    val_dataset
        Optional validation examples (e.g. the held-out test fold).
    num_workers
        Data-loading worker processes.
    data_on_device
        Hold the expression rows the batches use on the training device, so batches
        are gathered there and no expression data crosses from the host each step.
        ``"auto"``: on a CUDA device, for in-memory data that takes at most half of
        its free memory as a dense float matrix, with ``num_workers=0``. ``True``
        forces it (any device), ``False`` always reads batches on the host.
    """

    def __init__(
        self,
        train_dataset: PairedPerturbationDataset,
        batch_size: int = 32,
        seed: int = 0,
        val_dataset: PairedPerturbationDataset | None = None,
        num_workers: int = 0,
        data_on_device: bool | Literal["auto"] = "auto",
    ):
        super().__init__()
        if data_on_device not in (True, False, "auto"):
            raise ValueError(
                f"data_on_device must be True, False or 'auto', got {data_on_device!r}."
            )
        if data_on_device is True and num_workers > 0:
            raise ValueError(
                "data_on_device=True gathers batches on the device in the main process; "
                "set num_workers=0."
            )
        self.train_dataset = train_dataset
        self.val_dataset = val_dataset
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.data_on_device = data_on_device
        self.n_train = len(train_dataset)
        self.n_val = 0 if val_dataset is None else len(val_dataset)

    def _place(self, dataset: PairedPerturbationDataset) -> PairedPerturbationDataset:
        """Move ``dataset``'s rows to the training device when asked to (see class doc)."""
        trainer = getattr(self, "trainer", None)
        if self.data_on_device is False or trainer is None:
            return dataset
        device = trainer.strategy.root_device
        if dataset.device == device:
            return dataset
        if self.data_on_device == "auto":
            in_memory = sp.issparse(dataset.matrix) or isinstance(dataset.matrix, np.ndarray)
            if device.type != "cuda" or self.num_workers > 0 or not in_memory:
                return dataset
            free, _ = torch.cuda.mem_get_info(device)
            if dataset.device_bytes() > free // 2:
                return dataset
        return dataset.to_device(device)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        """Move the batch, but keep the example indices on the host.

        They only key the sampling noise of the training plan; reading them from the
        device would synchronise every step.
        """
        index = batch.pop(TENSORS.INDEX, None) if isinstance(batch, dict) else None
        batch = super().transfer_batch_to_device(batch, device, dataloader_idx)
        if index is not None:
            batch[TENSORS.INDEX] = index
        return batch

    def _replicas(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def train_dataloader(self) -> DataLoader:
        """Shuffled perturbation-pure batches, incomplete chunks dropped."""
        n, r = self._replicas()
        dataset = self._place(self.train_dataset)
        loader = make_loader(
            dataset, self.batch_size, True, True, self.seed, self.num_workers, n, r
        )
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            # Lightning creates the first iterator before it sets the sampler epoch; a run
            # resumed from a checkpoint must start from the restored epoch's permutation.
            # A checkpoint written at an epoch's end counts that epoch as processed but
            # not yet completed, so the next epoch to run is the processed count.
            loader.sampler.set_epoch(trainer.fit_loop.epoch_progress.current.processed)
        if len(loader.sampler) == 0:
            raise ValueError(
                f"No training batch: every perturbation has fewer than batch_size="
                f"{self.batch_size} training cells. Lower `batch_size`."
            )
        return loader

    def val_dataloader(self) -> DataLoader | list:
        """Validation batches (in order, incomplete chunks kept), if any."""
        if self.val_dataset is None or len(self.val_dataset) == 0:
            return []
        n, r = self._replicas()
        dataset = self._place(self.val_dataset)
        return make_loader(
            dataset, self.batch_size, False, False, self.seed, self.num_workers, n, r
        )
