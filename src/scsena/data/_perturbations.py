"""Perturbation labels: parsing, validation and encoding over single targets.

The canonical schema is the one of the CPA-preprocessed Norman 2019 data set:
``""`` for control cells, ``"A"`` for a single perturbation and ``"A,B"`` for a
double one, its targets sorted (``"B,A"`` is ``"A,B"``; ``"A,A"`` is refused). Any
other convention (pertpy's ``"control"`` / ``"A+B"``, the carpool screens' ``"NT"`` /
``"A_B"``) is mapped to it by :func:`normalise_labels`. This module is the one place
where labels are read: setup, training folds and prediction all use its rules.

A perturbation is encoded as a pair of indices into the sorted list of single
targets (``-1`` for "no target"), one index per target: this is the "one one-hot
vector per target" of the SENA causal layer, without materialising one-hot
vectors, and an unseen combination ``"A,B"`` needs no new category.
"""

from __future__ import annotations

import unicodedata
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

CANONICAL_CONTROL = ""
CANONICAL_DELIMITER = ","
MAX_TARGETS = 2
#: Delimiters of other label conventions, detected in labels read with another one.
OTHER_DELIMITERS = (",", "+", "_", "|", ";", "/", "&")

KIND_CONTROL = "control"
KIND_SINGLE = "single"
KIND_DOUBLE = "double"
KIND_OTHER = "other"


def _as_string_series(labels: Iterable | pd.Series, name: str = "perturbation") -> pd.Series:
    s = labels if isinstance(labels, pd.Series) else pd.Series(list(labels))
    if isinstance(s.dtype, pd.CategoricalDtype):
        s = s.astype(object)
    if s.isna().any():
        n = int(s.isna().sum())
        raise ValueError(
            f"The {name} labels contain {n} missing value(s) (NaN/None). Label every cell: "
            "use the control value for control cells, e.g. "
            "`adata.obs[key] = adata.obs[key].fillna('')`."
        )
    bad = s.map(lambda v: not isinstance(v, str))
    if bad.any():
        example = s[bad].iloc[0]
        raise TypeError(
            f"The {name} labels must be strings, found {type(example).__name__} values "
            f"(e.g. {example!r}). Convert the column with `.astype(str)` and make sure the "
            "labels are target gene names."
        )
    return _nfc(s)


def _nfc(s: pd.Series) -> pd.Series:
    """Labels in Unicode NFC: the same name typed as composed or decomposed is one name."""
    uniq = pd.unique(s)
    if all(v.isascii() for v in uniq):
        return s
    mapping = {v: unicodedata.normalize("NFC", v) for v in uniq}
    return s.map(mapping)


def split_label(label: str, control_value: str = "", delimiter: str = ",") -> tuple[str, ...]:
    """Split one perturbation label into its targets.

    Parameters
    ----------
    label
        The label, e.g. ``"CBL"``, ``"CBL,PTPN12"`` or the control value.
    control_value
        Label of control cells.
    delimiter
        Separator between the targets of a combination.

    Returns
    -------
    The targets (an empty tuple for control cells). Control tokens inside a
    combination (pertpy's ``"A+ctrl"``) are dropped.
    """
    stripped = unicodedata.normalize("NFC", label).strip()
    control_value = unicodedata.normalize("NFC", control_value)
    if stripped == control_value.strip():
        return ()
    parts = tuple(p.strip() for p in stripped.split(delimiter))
    if any(p == "" for p in parts):
        raise ValueError(
            f"Perturbation label {label!r} has an empty target name (delimiter {delimiter!r}). "
            "Fix the label, or pass the right `delimiter`/`control_value`."
        )
    controls = {control_value.strip(), "ctrl", "control"} - {""}
    kept = tuple(p for p in parts if p not in controls)
    return kept


def canonical_label(targets: Sequence[str]) -> str:
    """The canonical label of a perturbation: its targets sorted, joined by ``","``.

    ``"B,A"`` and ``"A,B"`` name the same double; both become ``"A,B"``. The control
    label is ``""``.
    """
    return CANONICAL_DELIMITER.join(sorted(targets))


#: How the control label is shown when the data's control value is the empty string.
SHOWN_CONTROL = "control"


def display_labels(canonical: Iterable[str], control_value: str, delimiter: str) -> np.ndarray:
    """Canonical labels in the data's own convention, as every scsena output shows them.

    ``"A,B"`` becomes ``"A+B"`` with ``delimiter="+"``; the control label becomes the
    data's ``control_value`` (``"control"`` when that is ``""``). Every label shown
    is read back as the same perturbation.
    """
    values = np.asarray(list(canonical), dtype=object)
    control = control_value or SHOWN_CONTROL
    mapping = {
        v: (control if v == CANONICAL_CONTROL else delimiter.join(v.split(CANONICAL_DELIMITER)))
        for v in pd.unique(values)
    }
    return np.asarray([mapping[v] for v in values], dtype=object)


def _refuse_other_delimiter(mapping: dict[str, str], control_value: str, delimiter: str) -> None:
    """Refuse single-target labels that are targets joined by another delimiter.

    ``"A+B"`` read with ``delimiter=","`` would be one target named ``"A+B"`` and the
    double would be lost. A label is refused when it splits on a common delimiter into
    parts of which one is a label of its own (or a control token such as ``"ctrl"``).
    """
    singles = {v for v in mapping.values() if v and CANONICAL_DELIMITER not in v}
    controls = {control_value.strip(), "ctrl", "control"} - {""}
    known = singles | controls
    for other in OTHER_DELIMITERS:
        if other == delimiter:
            continue
        for target in sorted(singles):
            parts = [p.strip() for p in target.split(other)]
            if len(parts) > 1 and all(parts) and any(p in known for p in parts):
                raise ValueError(
                    f"Perturbation label {target!r} looks like targets joined by {other!r}, "
                    f"but delimiter={delimiter!r}: it would be read as one target named "
                    f"{target!r} and the combination would be lost. Pass "
                    f"`delimiter={other!r}` (and the label of control cells as "
                    "`control_value`, e.g. 'control' in pertpy's files)."
                )


def warn_case_duplicates(targets: Sequence[str]) -> None:
    """Warn when two targets differ only by letter case (``"OXT"`` and ``"oxt"``)."""
    seen: dict[str, str] = {}
    for t in targets:
        other = seen.setdefault(t.casefold(), t)
        if other != t:
            warnings.warn(
                f"Targets {other!r} and {t!r} differ only by letter case; they are treated "
                "as two different targets. If they are the same gene, unify the labels "
                "before setup, e.g. `adata.obs[key] = adata.obs[key].str.upper()`.",
                UserWarning,
                stacklevel=4,
            )
            return


def normalise_labels(
    labels: Iterable[str] | pd.Series,
    control_value: str = "",
    delimiter: str = ",",
    *,
    max_targets: int | None = MAX_TARGETS,
) -> pd.Series:
    """Map perturbation labels of any convention to the canonical schema.

    Parameters
    ----------
    labels
        One label per cell.
    control_value
        Label of control cells in ``labels`` (``""`` in CPA's Norman file,
        ``"control"`` in pertpy's, ``"NT"`` in carpool screens).
    delimiter
        Separator between targets in ``labels`` (``","``, ``"+"``, ``"_"``).
    max_targets
        Refuse labels with more targets than this (SENA models one or two targets);
        ``None`` accepts any number.

    Returns
    -------
    Labels with ``""`` for control and the targets of a double sorted and joined by
    ``","`` (:func:`canonical_label`); the index of a :class:`pandas.Series` input is
    kept.

    Raises
    ------
    ValueError
        For a label with an empty target, more than ``max_targets`` targets, a repeated
        target (``"A,A"``), or single labels that look like targets joined by another
        delimiter (``"A+B"`` with ``delimiter=","``).
    """
    s = _as_string_series(labels)
    uniq = pd.unique(s.to_numpy())
    mapping: dict[str, str] = {}
    for lab in uniq:
        targets = split_label(lab, control_value, delimiter)
        if max_targets is not None and len(targets) > max_targets:
            raise ValueError(
                f"Perturbation label {lab!r} combines {len(targets)} targets; SENA predicts "
                f"single and double perturbations only (at most {max_targets} targets). "
                "Remove these cells before setup, e.g. "
                "`adata = adata[~adata.obs[key].str.count(delimiter).gt(1)].copy()`."
            )
        bad = [t for t in targets if CANONICAL_DELIMITER in t]
        if bad:
            raise ValueError(
                f"Target name {bad[0]!r} (from label {lab!r}) contains ',' which is the "
                "canonical separator; pass the right `delimiter`."
            )
        if len(set(targets)) != len(targets):
            raise ValueError(
                f"Perturbation label {lab!r} repeats target {targets[0]!r}; a double needs "
                f"two different targets. Relabel these cells as {targets[0]!r} or remove them."
            )
        mapping[lab] = canonical_label(targets)
    _refuse_other_delimiter(mapping, control_value, delimiter)
    out = s.map(mapping)
    out.name = getattr(labels, "name", None)
    return out


@dataclass(frozen=True)
class ParsedPerturbations:
    """Perturbation labels parsed against the set of single targets.

    Attributes
    ----------
    labels
        Canonical label per cell.
    kind
        Per cell: ``"control"``, ``"single"``, ``"double"`` (both targets seen
        singly) or ``"other"`` (a combination with a target never seen singly).
    targets
        Sorted single targets (the perturbation vocabulary, ``P`` of the method).
    codes
        ``(n_cells, 2)`` int64 target indices, ``-1`` for "no target"; cells of
        kind ``"other"`` have ``-1`` in both slots.
    """

    labels: pd.Series
    kind: np.ndarray
    targets: list[str]
    codes: np.ndarray


def parse_perturbations(
    labels: Iterable[str] | pd.Series,
    control_value: str = "",
    delimiter: str = ",",
    *,
    targets: Sequence[str] | None = None,
) -> ParsedPerturbations:
    """Parse labels into controls, singles and doubles and encode them.

    Parameters
    ----------
    labels
        One label per cell, any convention (see :func:`normalise_labels`).
    control_value
        Label of control cells.
    delimiter
        Separator between targets.
    targets
        The vocabulary of single targets. ``None`` derives it from the labels (every
        distinct single-target label, sorted), as the method does.

    Returns
    -------
    The parsed labels.
    """
    canon = normalise_labels(labels, control_value, delimiter)
    values = canon.to_numpy(dtype=object)
    n_control = int((values == CANONICAL_CONTROL).sum())
    if n_control == 0:
        shown = ", ".join(repr(v) for v in pd.unique(_as_string_series(labels))[:8])
        raise ValueError(
            f"No control cells: no label equals control_value={control_value!r}. "
            f"Labels look like {shown}. Pass the label of your control cells as "
            "`control_value` (e.g. 'control', 'NT', 'non-targeting')."
        )
    uniq = pd.unique(values)
    split = {u: tuple(u.split(CANONICAL_DELIMITER)) if u else () for u in uniq}
    if targets is None:
        targets = sorted(u for u, t in split.items() if len(t) == 1)
        warn_case_duplicates(targets)
        if not targets:
            raise ValueError(
                "No single-perturbation cells found: SENA learns each target from cells "
                "perturbed by that target alone. Check `perturbation_key` and `delimiter`."
            )
    targets = list(targets)
    index = {t: i for i, t in enumerate(targets)}
    code_of: dict[str, tuple[int, int]] = {}
    kind_of: dict[str, str] = {}
    for u, t in split.items():
        if len(t) == 0:
            code_of[u], kind_of[u] = (-1, -1), KIND_CONTROL
        elif all(x in index for x in t):
            idx = [index[x] for x in t] + [-1] * (MAX_TARGETS - len(t))
            code_of[u] = (idx[0], idx[1])
            kind_of[u] = KIND_SINGLE if len(t) == 1 else KIND_DOUBLE
        else:
            code_of[u], kind_of[u] = (-1, -1), KIND_OTHER
    codes = np.array([code_of[v] for v in uniq], dtype=np.int64).reshape(-1, 2)
    inverse = pd.Index(uniq).get_indexer(values)
    kinds = np.array([kind_of[v] for v in uniq], dtype=object)
    return ParsedPerturbations(
        labels=canon, kind=kinds[inverse], targets=targets, codes=codes[inverse]
    )


def encode_labels(
    labels: Sequence[str], targets: Sequence[str], delimiter: str = ","
) -> np.ndarray:
    """Encode perturbations to predict as target-index pairs.

    Parameters
    ----------
    labels
        Perturbations such as ``"CBL"`` or ``"CBL,PTPN12"`` (targets separated by
        ``delimiter``).
    targets
        The model's single targets.
    delimiter
        Separator between targets.

    Returns
    -------
    ``(len(labels), 2)`` int64 indices, ``-1`` for "no target"; the targets of a
    double in canonical (sorted) order, so ``"B,A"`` encodes as ``"A,B"``.

    Raises
    ------
    ValueError
        For an unknown target (the message lists the known ones), a repeated target or
        more than two targets.
    """
    if isinstance(labels, str):
        labels = [labels]
    index = {t: i for i, t in enumerate(targets)}
    out = np.full((len(labels), MAX_TARGETS), -1, dtype=np.int64)
    for row, lab in enumerate(_as_string_series(labels)):
        parts = split_label(lab, control_value="", delimiter=delimiter)
        if len(parts) == 0:
            raise ValueError(
                f"{lab!r} names no target; give a target such as {targets[0]!r} or a pair "
                f"such as '{targets[0]}{delimiter}{targets[-1]}'."
            )
        if len(parts) > MAX_TARGETS:
            raise ValueError(
                f"{lab!r} combines {len(parts)} targets; the model predicts single and "
                "double perturbations only."
            )
        if len(set(parts)) != len(parts):
            raise ValueError(f"{lab!r} repeats a target; a double needs two different targets.")
        parts = tuple(sorted(parts))
        unknown = [p for p in parts if p not in index]
        if unknown:
            shown = ", ".join(targets[:30]) + (" ..." if len(targets) > 30 else "")
            raise ValueError(
                f"Unknown target(s) {unknown} in {lab!r}: the model knows only targets seen "
                f"as single perturbations in training ({len(targets)}): {shown}. A double "
                "can be predicted when each of its targets was seen singly."
            )
        for j, p in enumerate(parts):
            out[row, j] = index[p]
    return out
