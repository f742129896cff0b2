from ._data import (
    PairedPerturbationDataset,
    PerturbationDataModule,
    PerturbationPureBatchSampler,
    dense_rows,
    draw_control_partners,
    make_loader,
)
from ._schedules import Schedules
from ._training_plan import SENATrainingPlan

__all__ = [
    "PairedPerturbationDataset",
    "PerturbationDataModule",
    "PerturbationPureBatchSampler",
    "SENATrainingPlan",
    "Schedules",
    "dense_rows",
    "draw_control_partners",
    "make_loader",
]
