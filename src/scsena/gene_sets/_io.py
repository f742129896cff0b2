"""Gene sets as mappings, GMT files and long tables (decoupler layout)."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._bundled import go_terms_table

GeneSets = dict[str, list[str]]


# --------------------------------------------------------------------------- normalisation


def _normalise_mapping(gene_sets: Mapping[Any, Any]) -> GeneSets:
    """Turn a mapping of term -> genes into term -> sorted unique list of str."""
    out: GeneSets = {}
    for key, genes in gene_sets.items():
        if isinstance(genes, str | bytes) or not isinstance(genes, Iterable):
            raise TypeError(
                f"gene set {key!r} must be an iterable of gene ids (list, set, array), got "
                f"{type(genes).__name__}; wrap a single gene in a list: {{{key!r}: [{genes!r}]}}"
            )
        name = str(key)
        if name in out:
            raise ValueError(f"gene set name {name!r} occurs twice (after conversion to str)")
        out[name] = sorted({str(g) for g in genes if not _is_missing(g)})
    return out


def _is_missing(value: Any) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


# --------------------------------------------------------------------------- GMT


def _open_text(path: str | os.PathLike[str], mode: str):
    path = Path(path)
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, mode + "t", encoding="utf-8", newline="")
    return open(path, mode, encoding="utf-8", newline="")


def read_gmt(path: str | os.PathLike[str]) -> GeneSets:
    """Read a GMT gene-set file.

    Each line holds a set name, a description (ignored) and the member genes, separated by
    tabs. Files ending in ``.gz`` are decompressed.

    Parameters
    ----------
    path
        Path of the ``.gmt`` (or ``.gmt.gz``) file.

    Returns
    -------
    dict
        Set name -> sorted unique member gene ids, in file order of the sets.

    Raises
    ------
    ValueError
        If a line has no description field or a set name occurs twice.
    """
    out: GeneSets = {}
    with _open_text(path, "r") as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2:
                raise ValueError(
                    f"{path}: line {lineno} is not in GMT format (name<TAB>description<TAB>"
                    f"gene<TAB>gene...): {line[:80]!r}"
                )
            name = fields[0].strip()
            if name in out:
                raise ValueError(f"{path}: gene set {name!r} occurs twice (line {lineno})")
            out[name] = sorted({g.strip() for g in fields[2:] if g.strip()})
    return out


def write_gmt(
    gene_sets: Mapping[str, Iterable[str]],
    path: str | os.PathLike[str],
    descriptions: Mapping[str, str] | None = None,
) -> None:
    """Write gene sets to a GMT file.

    Parameters
    ----------
    gene_sets
        Set name -> member gene ids. Members are written sorted and deduplicated.
    path
        Output path; a name ending in ``.gz`` is gzip-compressed.
    descriptions
        Set name -> description (second GMT column). Sets without one get their GO term
        name if the set name is a GO id of the bundled release, else ``"NA"``.

    Raises
    ------
    ValueError
        If a name, description or gene contains a tab or a newline.
    """
    sets = _normalise_mapping(gene_sets)
    descriptions = dict(descriptions or {})
    names = go_terms_table().set_index("go_id")["name"]
    lines = []
    for name, genes in sets.items():
        desc = descriptions.get(name)
        if desc is None:
            desc = names.get(name, "NA")
        fields = [name, str(desc), *genes]
        bad = [f for f in fields if any(c in f for c in "\t\r\n")]
        if bad:
            raise ValueError(f"gene set {name!r}: field {bad[0]!r} contains a tab or newline")
        lines.append("\t".join(fields) + "\n")
    with _open_text(path, "w") as fh:
        fh.writelines(lines)


# --------------------------------------------------------------------------- long tables


def from_dataframe(df: pd.DataFrame, source: str = "source", target: str = "target") -> GeneSets:
    """Gene sets from a long table, one row per (set, gene) pair (decoupler's layout).

    Parameters
    ----------
    df
        Long table; other columns (e.g. ``weight``) are ignored.
    source
        Column holding the set names.
    target
        Column holding the member gene ids.

    Returns
    -------
    dict
        Set name -> sorted unique member gene ids, sets sorted by name. Rows with a
        missing value are dropped.

    Raises
    ------
    ValueError
        If a column is missing.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in (source, target) if c not in df.columns]
    if missing:
        raise ValueError(
            f"column(s) {missing} not in the table (columns: {list(df.columns)}); pass the "
            f"set-name and gene columns as source=... and target=..."
        )
    long = df[[source, target]].dropna()
    long = pd.DataFrame({"s": long[source].astype(str), "t": long[target].astype(str)})
    long = long.drop_duplicates().sort_values(["s", "t"], ignore_index=True)
    if long.empty:
        return {}
    s = long["s"].to_numpy()
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    genes = np.split(long["t"].to_numpy(), starts[1:])
    return {str(s[i]): g.tolist() for i, g in zip(starts, genes)}


def to_dataframe(gene_sets: Mapping[str, Iterable[str]]) -> pd.DataFrame:
    """Long table of gene sets with columns ``source`` (set name) and ``target`` (gene id).

    Parameters
    ----------
    gene_sets
        Set name -> member gene ids.

    Returns
    -------
    pandas.DataFrame
        One row per (set, gene) pair, in the order of ``gene_sets`` and of each set's genes.
    """
    names = list(gene_sets.keys())
    members = [list(gene_sets[n]) for n in names]
    lengths = np.fromiter((len(m) for m in members), dtype=np.int64, count=len(members))
    source = np.repeat(np.asarray(names, dtype=object), lengths)
    target = np.fromiter((g for m in members for g in m), dtype=object, count=int(lengths.sum()))
    return pd.DataFrame({"source": source, "target": target})
