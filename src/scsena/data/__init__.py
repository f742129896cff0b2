"""Data registration: the perturbation-label grammar, input checks and AnnData fields.

This package is the one place where perturbation labels are read (:func:`parse_perturbations`,
:func:`normalise_labels`, :func:`encode_labels`), where expression input is checked
(:func:`check_expression`), where MuData guide modalities become labels
(:func:`labels_from_guides`) and where the scvi-tools fields that register the parsed
perturbations and the gene-set mask live (:class:`PerturbationField`,
:class:`GeneSetMaskField`). It also holds the bundled GO BP tables (``go/``, ``sena/``).

The label grammar is imported eagerly (it needs only numpy and pandas); the fields, which
need scvi-tools, on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._mudata import (
    GUIDE_LABEL_KEY,
    NON_TARGETING,
    check_aligned_cells,
    labels_from_guides,
    rna_modality,
)
from ._perturbations import (
    CANONICAL_CONTROL,
    CANONICAL_DELIMITER,
    KIND_CONTROL,
    KIND_DOUBLE,
    KIND_OTHER,
    KIND_SINGLE,
    MAX_TARGETS,
    SHOWN_CONTROL,
    ParsedPerturbations,
    canonical_label,
    display_labels,
    encode_labels,
    normalise_labels,
    parse_perturbations,
    split_label,
    warn_case_duplicates,
)
from ._validation import check_expression, warn_constant_genes

_FIELDS = (
    "GeneSetMaskField",
    "PerturbationField",
    "check_known_categories",
    "covariate_category_counts",
    "covariate_fields",
    "mudata_fields",
    "mask_from_state",
    "targets_from_state",
)

__all__ = [
    "CANONICAL_CONTROL",
    "CANONICAL_DELIMITER",
    "GUIDE_LABEL_KEY",
    "KIND_CONTROL",
    "KIND_DOUBLE",
    "KIND_OTHER",
    "KIND_SINGLE",
    "MAX_TARGETS",
    "SHOWN_CONTROL",
    "NON_TARGETING",
    "ParsedPerturbations",
    "canonical_label",
    "display_labels",
    "check_aligned_cells",
    "check_expression",
    "encode_labels",
    "labels_from_guides",
    "normalise_labels",
    "parse_perturbations",
    "rna_modality",
    "split_label",
    "warn_case_duplicates",
    "warn_constant_genes",
    *_FIELDS,
]


def __getattr__(name: str) -> Any:
    if name not in _FIELDS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module("._fields", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
