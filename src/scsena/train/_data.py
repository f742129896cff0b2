"""Paired, perturbation-pure mini-batches (SPEC section 1).

A training example is a triple ``(x, y, c)``: ``y`` a perturbed cell, ``c`` its
perturbation (target indices) and ``x`` a control cell drawn at random for that
example, once, when the examples are built. Batches are perturbation-pure: the
sampler groups examples by perturbation, shuffles each group, cuts it into chunks
of ``batch_size``, drops each group's incomplete last chunk and shuffles the list of
chunks. A batch is read with one fancy-indexing call on the (sparse) expression
matrix, never cell by cell.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning.pytorch as pl
import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from scsena._constants import TENSORS


def draw_control_partners(n_examples: int, control_indices: np.ndarray, seed: int) -> np.ndarray:
    """Draw one control cell per example, uniformly with replacement."""
    rng = np.random.default_rng(seed)
    return control_indices[rng.integers(0, len(control_indices), size=n_examples)]


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


def _rows(matrix, index: np.ndarray) -> np.ndarray:
    """Dense float rows of a dense, CSR/CSC or backed matrix."""
    if sp.issparse(matrix):
        return matrix[index].toarray()
    if isinstance(matrix, np.ndarray):
        return matrix[index]
    # backed / lazy arrays: read sorted unique rows, then reorder
    uniq, inverse = np.unique(index, return_inverse=True)
    block = matrix[uniq]
    block = block.toarray() if sp.issparse(block) else np.asarray(block)
    return block[inverse]


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
    """

    def __init__(
        self,
        matrix,
        perturbed: np.ndarray,
        partners: np.ndarray,
        codes: np.ndarray,
        dtype: torch.dtype = torch.float32,
    ):
        if sp.issparse(matrix) and matrix.format != "csr":
            matrix = matrix.tocsr()
        self.matrix = matrix
        self.perturbed = np.asarray(perturbed, dtype=np.int64)
        self.partners = np.asarray(partners, dtype=np.int64)
        self.codes = torch.as_tensor(np.asarray(codes, dtype=np.int64))
        self.dtype = dtype

    def __len__(self) -> int:
        return len(self.perturbed)

    def __getitem__(self, index) -> dict[str, torch.Tensor]:
        index = np.atleast_1d(np.asarray(index, dtype=np.int64))
        x = _rows(self.matrix, self.partners[index])
        y = _rows(self.matrix, self.perturbed[index])
        return {
            TENSORS.X_CONTROL: torch.as_tensor(x, dtype=self.dtype),
            TENSORS.Y: torch.as_tensor(y, dtype=self.dtype),
            TENSORS.CODES: self.codes[torch.as_tensor(index)],
            TENSORS.INDEX: torch.as_tensor(index),
        }


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
    """

    def __init__(
        self,
        train_dataset: PairedPerturbationDataset,
        batch_size: int = 32,
        seed: int = 0,
        val_dataset: PairedPerturbationDataset | None = None,
        num_workers: int = 0,
    ):
        super().__init__()
        self.train_dataset = train_dataset
        self.val_dataset = val_dataset
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.n_train = len(train_dataset)
        self.n_val = 0 if val_dataset is None else len(val_dataset)

    def _replicas(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def train_dataloader(self) -> DataLoader:
        """Shuffled perturbation-pure batches, incomplete chunks dropped."""
        n, r = self._replicas()
        loader = make_loader(
            self.train_dataset, self.batch_size, True, True, self.seed, self.num_workers, n, r
        )
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            # Lightning creates the first iterator before it sets the sampler epoch; a run
            # resumed from a checkpoint must start from the restored epoch's permutation
            loader.sampler.set_epoch(trainer.current_epoch)
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
        return make_loader(
            self.val_dataset, self.batch_size, False, False, self.seed, self.num_workers, n, r
        )
