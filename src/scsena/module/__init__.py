from ._layers import (
    CausalLayer,
    InterventionEncoder,
    InterventionTable,
    MaskedLinear,
    MemberMeanLayer,
)
from ._losses import (
    assignment_imbalance,
    dag_l1,
    kl_divergence,
    mean_shift_error,
    mmd,
    mmd_bandwidths,
)
from ._module import SENAModule

__all__ = [
    "CausalLayer",
    "InterventionEncoder",
    "InterventionTable",
    "MaskedLinear",
    "MemberMeanLayer",
    "SENAModule",
    "assignment_imbalance",
    "dag_l1",
    "kl_divergence",
    "mean_shift_error",
    "mmd",
    "mmd_bandwidths",
]
