"""Checks on the expression matrix given to the model."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp

_CHUNK = 20_000


def _blocks(matrix, n_rows: int):
    for start in range(0, n_rows, _CHUNK):
        block = matrix[start : min(start + _CHUNK, n_rows)]
        if sp.issparse(block):
            yield np.asarray(block.data)
        else:
            yield np.asarray(block)


def check_expression(matrix, where: str = "adata.X", max_value: float | None = None) -> None:
    """Refuse NaN, infinite, negative and too large values; warn on integer-valued data.

    Parameters
    ----------
    matrix
        ``cells x genes`` matrix (dense, scipy sparse, or backed).
    where
        Name of the matrix for messages (``adata.X`` or ``adata.layers[...]``).
    max_value
        Refuse values above it (data that were never log-transformed); ``None``: no
        limit.

    Raises
    ------
    ValueError
        On NaN, infinite or negative values, or values above ``max_value``.
    """
    n_rows = matrix.shape[0]
    if n_rows == 0 or matrix.shape[1] == 0:
        raise ValueError(f"{where} is empty (shape {matrix.shape}).")
    all_integer = True
    vmax = 0.0
    for values in _blocks(matrix, n_rows):
        if values.size == 0:
            continue
        if not np.issubdtype(values.dtype, np.number):
            raise TypeError(f"{where} must be numeric, found dtype {values.dtype}.")
        if not np.isfinite(values).all():
            raise ValueError(
                f"{where} contains NaN or infinite values. Remove or impute them before "
                "setup (e.g. `adata = adata[:, np.isfinite(adata.X.toarray()).all(0)]`)."
            )
        vmin = values.min()
        if vmin < 0:
            raise ValueError(
                f"{where} contains negative values (min {vmin:.3g}). SENA expects "
                "log-normalised expression (`sc.pp.normalize_total(adata); "
                "sc.pp.log1p(adata)`), not scaled or centred data; pass `layer=` to use "
                "another matrix."
            )
        vmax = max(vmax, float(values.max()))
        if all_integer:
            all_integer = bool(np.all(values == np.round(values)))
    if max_value is not None and vmax > max_value:
        kind = "raw counts" if all_integer else "values that were never log-transformed"
        raise ValueError(
            f"{where} has values up to {vmax:.4g}, far above log-normalised expression "
            f"(log1p of counts per million stays below 14): {kind} (e.g. counts, CPM or "
            "TPM). Training on them diverges. Fix: `sc.pp.normalize_total(adata, "
            "target_sum=1e4); sc.pp.log1p(adata)` (or only `sc.pp.log1p(adata)` for CPM), "
            "or pass `layer=` with log-normalised values. If these values are "
            "log-normalised on another scale, pass `allow_large_values=True`."
        )
    # integer-valued data are counts, however shallow (a maximum of 13 is still counts)
    if all_integer and vmax > 0:
        warnings.warn(
            f"{where} looks like raw counts (integers up to {vmax:.0f}); SENA expects "
            "log-normalised values. Fix: `adata.layers['counts'] = adata.X.copy(); "
            "sc.pp.normalize_total(adata, target_sum=1e4); sc.pp.log1p(adata)`.",
            UserWarning,
            stacklevel=3,
        )


def warn_constant_genes(matrix, n_rows_max: int = 200_000) -> None:
    """Warn about genes that are zero in every cell (they carry no signal)."""
    n_rows = min(matrix.shape[0], n_rows_max)
    nonzero = np.zeros(matrix.shape[1], dtype=bool)
    for start in range(0, n_rows, _CHUNK):
        block = matrix[start : min(start + _CHUNK, n_rows)]
        if sp.issparse(block):
            block = block.tocsr()
            nonzero[block.indices[block.data != 0]] = True
        else:
            nonzero |= (np.asarray(block) != 0).any(axis=0)
    n_zero = int((~nonzero).sum())
    if n_zero:
        warnings.warn(
            f"{n_zero} gene(s) are zero in every cell and carry no signal; consider "
            "`sc.pp.filter_genes(adata, min_cells=1)` before setup.",
            UserWarning,
            stacklevel=3,
        )
