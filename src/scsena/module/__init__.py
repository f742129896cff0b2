from ._layers import CausalLayer, InterventionEncoder, MaskedLinear
from ._losses import dag_l1, kl_divergence, mmd, mmd_bandwidths
from ._module import SENAModule

__all__ = [
    "CausalLayer",
    "InterventionEncoder",
    "MaskedLinear",
    "SENAModule",
    "dag_l1",
    "kl_divergence",
    "mmd",
    "mmd_bandwidths",
]
