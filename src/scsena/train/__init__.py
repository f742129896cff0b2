from ._data import (
    PairedPerturbationDataset,
    PerturbationDataModule,
    PerturbationPureBatchSampler,
    draw_control_partners,
    make_loader,
)
from ._schedules import Schedules
from ._training_plan import BestEpochCallback, SENATrainingPlan

__all__ = [
    "BestEpochCallback",
    "PairedPerturbationDataset",
    "PerturbationDataModule",
    "PerturbationPureBatchSampler",
    "SENATrainingPlan",
    "Schedules",
    "draw_control_partners",
    "make_loader",
]
