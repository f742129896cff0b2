from ._checkpoint import EpochCheckpoint, check_resume
from ._data import (
    PairedPerturbationDataset,
    PerturbationDataModule,
    PerturbationPureBatchSampler,
    dense_rows,
    draw_control_partners,
    make_loader,
)
from ._early_stopping import ScheduledEarlyStopping
from ._progress import EpochLines, progress_callbacks
from ._schedules import Schedules
from ._training_plan import SELECTION_COMPONENTS, NonFiniteLossError, SENATrainingPlan

__all__ = [
    "SELECTION_COMPONENTS",
    "EpochCheckpoint",
    "EpochLines",
    "NonFiniteLossError",
    "PairedPerturbationDataset",
    "PerturbationDataModule",
    "PerturbationPureBatchSampler",
    "SENATrainingPlan",
    "ScheduledEarlyStopping",
    "Schedules",
    "check_resume",
    "dense_rows",
    "draw_control_partners",
    "make_loader",
    "progress_callbacks",
]
