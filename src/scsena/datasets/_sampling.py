"""Negative-binomial counts by CDF inversion and their assembly into CSR matrices.

The simulator generates cells in chunks (possibly on several threads); each chunk
is sampled by :func:`nb_counts` into reusable :class:`Workspace` buffers, and the
chunks are gathered, in order, by :func:`assemble_csr`.
"""

from __future__ import annotations

import contextlib

import numpy as np
from scipy import sparse

_INVERSION_MAX_MEAN = 30.0  # NB means above this are sampled by gamma-Poisson
_DENSE_STEPS = 3  # NB inversion steps done on whole arrays


class Workspace:
    """Buffers of one thread, reused from chunk to chunk (no page faults, no zeroing)."""

    def __init__(self, n_rows: int, n_genes: int) -> None:
        shape = (n_rows, n_genes)
        self.eta = np.empty(shape, dtype=np.float32)
        self.uniform = np.empty(shape, dtype=np.float32)
        self.q = np.empty(shape, dtype=np.float32)
        self.pk = np.empty(shape, dtype=np.float32)
        self.cdf = np.empty(shape, dtype=np.float32)
        self.counts = np.empty(shape, dtype=np.uint8)
        self.positive = np.empty(shape, dtype=bool)
        self.above = np.empty(shape, dtype=bool)
        self.large = np.empty(shape, dtype=bool)


def nb_counts(
    rng: np.random.Generator, mu: np.ndarray, shape: np.ndarray, ws: Workspace
) -> tuple[np.ndarray, np.ndarray]:
    """Negative-binomial counts of mean ``mu`` (cells x genes) and gene-wise ``shape``.

    Exact sampling, fast for sparse counts: entries of mean up to
    ``_INVERSION_MAX_MEAN`` are sampled by inversion of the CDF with one uniform per
    entry (the first ``_DENSE_STEPS`` steps on whole arrays, then only on the few
    entries not yet resolved); larger means by gamma-Poisson.

    Returns
    -------
    Flat (row-major) indices of the nonzero entries, sorted, and their counts
    (float32).
    """
    n, g = mu.shape
    r = shape.astype(np.float32)
    uniform = rng.random(dtype=np.float32, out=ws.uniform[:n])
    large = np.greater(mu, _INVERSION_MAX_MEAN, out=ws.large[:n])
    any_large = bool(large.any())
    if any_large:
        np.copyto(uniform, 0.0, where=large)  # never above the CDF: sampled below
    q = np.add(mu, r, out=ws.q[:n])  # q = mu / (mu + r), the NB "success" probability
    np.divide(mu, q, out=q)
    pk = np.negative(q, out=ws.pk[:n])  # P(X = 0) = (1 - q)^r
    np.log1p(pk, out=pk)
    pk *= r
    np.exp(pk, out=pk)
    cdf = ws.cdf[:n]
    np.copyto(cdf, pk)
    positive = np.greater(uniform, cdf, out=ws.positive[:n])
    counts = ws.counts[:n]
    np.copyto(counts, positive.view(np.uint8))
    above = ws.above[:n]
    for k in range(_DENSE_STEPS):
        pk *= q
        pk *= (k + r) / (k + 1)  # P(X = k + 1)
        cdf += pk
        np.greater(uniform, cdf, out=above)
        counts += above.view(np.uint8)
    if any_large:
        big = np.flatnonzero(large)
        rb = shape[big % g]
        big_values = rng.poisson(rng.standard_gamma(rb) * (mu.ravel()[big] / rb))
        nonzero = big_values > 0
        big, big_values = big[nonzero], big_values[nonzero]
        positive.ravel()[big] = True
    idx = np.flatnonzero(positive)
    values = counts.ravel()[idx].astype(np.float32)
    if any_large:
        values[np.searchsorted(idx, big)] = big_values
    rest = np.flatnonzero(above)  # X > _DENSE_STEPS: continue on these entries only
    if rest.size:
        pos = np.searchsorted(idx, rest)
        u = uniform.ravel()[rest].astype(np.float64)
        c = cdf.ravel()[rest].astype(np.float64)
        p = pk.ravel()[rest].astype(np.float64)
        qq = q.ravel()[rest].astype(np.float64)
        rr = shape[rest % g]
        k = _DENSE_STEPS
        while pos.size:
            p *= (k + rr) / (k + 1) * qq
            c += p
            k += 1
            # stop where the CDF has converged: ``c`` comes from float32 sums, so for
            # ``u`` within rounding of 1 it may never exceed ``u``; what is left beyond
            # ``k`` then weighs about ``p / (1 - q)``, below 1e-12
            keep = np.flatnonzero((u > c) & (p > 1e-12 * (1.0 - qq)))
            pos, u, c, p, qq, rr = pos[keep], u[keep], c[keep], p[keep], qq[keep], rr[keep]
            values[pos] += 1
    return idx, values


def csr_parts(
    idx: np.ndarray, data: np.ndarray, n_rows: int, n_cols: int, target_sum: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CSR parts of sampled counts and of their log-normalised values.

    ``idx`` and ``data`` are the sorted flat indices and counts of the nonzero entries
    of an ``n_rows x n_cols`` matrix (as returned by :func:`nb_counts`).

    Returns
    -------
    Counts, column indices (int32), nonzero entries per row and
    ``log1p(target_sum * counts / row total)``, all aligned.
    """
    indptr = np.searchsorted(idx, np.arange(n_rows + 1) * n_cols)
    row_nnz = np.diff(indptr)
    cols = np.remainder(idx, n_cols, out=np.empty(idx.size, dtype=np.int32), casting="unsafe")
    total = np.zeros(n_rows)
    filled = row_nnz > 0
    if filled.any():
        total[filled] = np.add.reduceat(data, indptr[:-1][filled], dtype=np.float64)
    with np.errstate(divide="ignore"):
        scale = (target_sum / total).astype(np.float32)
    xdata = np.repeat(scale, row_nnz)
    xdata *= data
    np.log1p(xdata, out=xdata)
    return data, cols, row_nnz, xdata


def single_threaded_blas():
    """Context limiting BLAS to one thread (a no-op without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


class _Growable:
    """A 1-d buffer filled from the front, grown geometrically when full."""

    def __init__(self, dtype, capacity: int) -> None:
        self.array = np.empty(max(capacity, 1), dtype=dtype)
        self.size = 0

    def extend(self, values: np.ndarray) -> None:
        end = self.size + values.size
        if end > self.array.size:
            grown = np.empty(max(end, int(self.array.size * 1.25)), dtype=self.array.dtype)
            grown[: self.size] = self.array[: self.size]
            self.array = grown
        self.array[self.size : end] = values
        self.size = end

    def finish(self, dtype=None) -> np.ndarray:
        out = self.array
        if out.size != self.size:
            try:  # shrink in place (realloc), no copy of the data
                out.resize(self.size, refcheck=False)
            except ValueError:
                out = out[: self.size].copy()
        return out if dtype is None else out.astype(dtype, copy=False)


def assemble_csr(parts, n_cells: int, n_genes: int) -> tuple[sparse.csr_matrix, ...]:
    """Gather chunk parts, in order, into count and log-normalised CSR matrices.

    Parts are copied into the result as they arrive and then released, so memory
    stays close to the size of the result.
    """
    buffers = None
    row_nnz = []
    for data, cols, nnz, xdata in parts:
        if buffers is None:
            # Cells are in random order: the first chunk predicts the total well.
            capacity = int(data.size / max(nnz.size, 1) * n_cells * 1.05) + 1024
            buffers = [_Growable(a.dtype, capacity) for a in (data, cols, xdata)]
        for buf, values in zip(buffers, (data, cols, xdata)):
            buf.extend(values)
        row_nnz.append(nnz)
        del data, cols, xdata
    indptr = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(np.concatenate(row_nnz), out=indptr[1:])
    idx_dtype = np.int32 if indptr[-1] < np.iinfo(np.int32).max else np.int64
    data, cols, xdata = (buf.finish() for buf in buffers)
    cols = cols.astype(idx_dtype, copy=False)
    indptr = indptr.astype(idx_dtype)
    shape = (n_cells, n_genes)
    # Both matrices have the same sparsity pattern: they share the (read-only in
    # practice) index arrays, which saves a copy of the largest array.
    counts = sparse.csr_matrix((data, cols, indptr), shape=shape)
    X = sparse.csr_matrix((xdata, cols, indptr), shape=shape)
    counts.has_sorted_indices = X.has_sorted_indices = True
    return counts, X
