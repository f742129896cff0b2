"""Experiment tracking with MLflow through Lightning's logger."""

from __future__ import annotations

import os
from pathlib import Path


def default_tracking_uri(directory: str | os.PathLike = ".") -> str:
    """A local MLflow store: an SQLite file ``mlflow.db`` in ``directory``."""
    path = Path(directory).resolve() / "mlflow.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def mlflow_logger(
    experiment_name: str = "scsena",
    tracking_uri: str | None = None,
    run_name: str | None = None,
    directory: str | os.PathLike = ".",
    **kwargs,
):
    """Lightning's :class:`~lightning.pytorch.loggers.MLFlowLogger` with a local default store.

    Parameters
    ----------
    experiment_name
        MLflow experiment.
    tracking_uri
        Tracking URI (a server, ``sqlite:///...``, ``file:...``); ``None`` uses
        :func:`default_tracking_uri` in ``directory``.
    run_name
        Name of the run.
    directory
        Where the default local store (and its artifacts, ``mlartifacts/``) lives.
    **kwargs
        Passed to :class:`~lightning.pytorch.loggers.MLFlowLogger`.

    Returns
    -------
    The logger, to pass as ``model.train(logger=...)``.
    """
    try:
        from lightning.pytorch.loggers import MLFlowLogger
    except ImportError as err:  # pragma: no cover - lightning always has it
        raise ImportError("MLflow logging needs lightning's MLFlowLogger.") from err
    try:
        import mlflow  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "MLflow is not installed: `pip install 'scsena[mlflow]'` (or `pip install mlflow`)."
        ) from err
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = tracking_uri or default_tracking_uri(directory)
    if tracking_uri is None:
        # artifacts next to the store, not in ./mlruns of the current directory
        artifacts = Path(directory).resolve() / "mlartifacts"
        kwargs.setdefault("artifact_location", artifacts.as_uri())
    return MLFlowLogger(
        experiment_name=experiment_name, tracking_uri=uri, run_name=run_name, **kwargs
    )
