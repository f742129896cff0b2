"""Keys shared across the package (registry fields, tensors, AnnData keys)."""

from typing import NamedTuple


class _RegistryKeys(NamedTuple):
    X_KEY: str = "X"
    PERTURBATION_KEY: str = "perturbation"
    MASK_KEY: str = "gene_set_mask"
    BATCH_KEY: str = "batch"
    CAT_COVS_KEY: str = "extra_categorical_covs"


class _TensorKeys(NamedTuple):
    X_CONTROL: str = "x"
    Y: str = "y"
    CODES: str = "codes"
    INDEX: str = "index"
    COVARIATES: str = "covariates"


class _AnnDataKeys(NamedTuple):
    MASK: str = "scsena_mask"
    FOLD: str = "scsena_fold"
    ACTIVITY: str = "X_scsena_activity"
    ACTIVITY_UNS: str = "scsena_activity"
    PERTURBATION: str = "scsena_perturbation"
    DATASET: str = "scsena_dataset"


REGISTRY_KEYS = _RegistryKeys()
TENSORS = _TensorKeys()
ADATA_KEYS = _AnnDataKeys()

FOLD_TRAIN = "train"
FOLD_TEST = "test"
FOLD_DOUBLE = "double"
FOLD_CONTROL = "control"
FOLD_EXCLUDED = "excluded"

#: Held-out single perturbations of the SENA paper's Norman 2019 evaluation; ``heldout="auto"``
#: falls back to them for data sets without their own list (where they overlap the targets).
NORMAN_HELDOUT = (
    "ETS2",
    "SGK1",
    "POU3F2",
    "TBX2",
    "CBL",
    "MAPK1",
    "CDKN1C",
    "S1PR2",
    "PTPN1",
    "MAP2K6",
    "COL1A1",
)
