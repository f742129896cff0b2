"""One entry point for any description of gene sets: presets, GMT paths, tables, dicts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ._go import go_bp
from ._io import GeneSets, _normalise_mapping, from_dataframe, read_gmt

#: Names of the bundled gene-set collections accepted by :func:`as_gene_sets`.
_PRESETS = ("go_bp_sena", "go_bp")


def as_gene_sets(obj: Any, *, id_type: str = "ensembl") -> GeneSets:
    """Normalise any supported description of gene sets to ``{name: sorted unique genes}``.

    Parameters
    ----------
    obj
        One of

        - ``"go_bp_sena"``: SENA's 1,424 GO BP terms, ``go_bp(terms="sena")``;
        - ``"go_bp"``: all GO BP terms, ``go_bp()``;
        - a path (``str`` or :class:`~pathlib.Path`) ending in ``.gmt`` or ``.gmt.gz``;
        - a long :class:`~pandas.DataFrame` with columns ``source`` and ``target``;
        - a mapping of set name -> iterable of gene ids.
    id_type
        Gene identifiers of the bundled GO presets, ``"ensembl"`` or ``"symbol"``. Files,
        tables and mappings are returned with the identifiers they contain.

    Returns
    -------
    dict
        Set name -> sorted unique gene ids.

    Raises
    ------
    ValueError
        For an unknown preset name or a string that is not a GMT path.
    TypeError
        For any other kind of object.
    """
    if isinstance(obj, str) and obj in _PRESETS:
        return go_bp(terms="sena" if obj == "go_bp_sena" else None, id_type=id_type)
    if isinstance(obj, str | os.PathLike):
        path = Path(obj)
        if path.name.lower().endswith((".gmt", ".gmt.gz")):
            if not path.exists():
                raise FileNotFoundError(f"GMT file not found: {path}")
            return read_gmt(path)
        raise ValueError(
            f"cannot interpret {str(obj)!r} as gene sets: use a preset ({', '.join(_PRESETS)}) "
            f"or the path of a .gmt file"
        )
    if isinstance(obj, pd.DataFrame):
        return from_dataframe(obj)
    if isinstance(obj, Mapping):
        return _normalise_mapping(obj)
    raise TypeError(
        f"cannot interpret an object of type {type(obj).__name__} as gene sets: pass a preset "
        f"name ({', '.join(_PRESETS)}), a .gmt path, a long DataFrame (source, target) or a "
        f"dict of set name -> gene ids"
    )
