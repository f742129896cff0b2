"""The environment of a training run: torch threads, and no third-party chatter."""

from __future__ import annotations

import builtins
import contextlib
import functools
import logging
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
_MISSING = object()

#: Lightning's informational lines (``GPU available: ...``, the ``litlogger`` tip,
#: ``Trainer.fit stopped: max_epochs reached``) all come from these loggers.
_INFO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)

#: Third-party warnings that say nothing about the user's data or model (message regexes).
_WARNINGS = (
    # torch deprecation triggered inside Lightning's own pytree helper
    r".*LeafSpec.*",
    # Lightning's per-step logging interval: scsena records its history per epoch
    r"The number of training batches .* is smaller than the logging interval",
)


@contextlib.contextmanager
def third_party_quiet() -> Iterator[None]:
    """Silence Lightning's informational log lines and a few irrelevant third-party warnings.

    Lightning's warnings that matter (e.g. a GPU present but unused) and all of scsena's
    warnings are untouched; the previous logger levels and warning filters are restored.
    """
    loggers = [logging.getLogger(name) for name in _INFO_LOGGERS]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        for pattern in _WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        for lg in loggers:
            lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


_SCVI_EXCEPTION_PRINT = "Exception raised during training."


def _print_except_scvi_exception(*args: Any, **kwargs: Any) -> None:
    """``print``, except scvi-tools' ``Exception raised during training. <class 'NameError'>``.

    scvi-tools' runner prints that line (naming ``NameError`` whatever the exception) for
    every exception, Ctrl-C and SIGTERM included; scsena says what happened instead.
    """
    if args and args[0] == _SCVI_EXCEPTION_PRINT:
        return
    builtins.print(*args, **kwargs)


@contextlib.contextmanager
def _no_scvi_exception_print() -> Iterator[None]:
    from scvi.train import _trainrunner

    namespace = vars(_trainrunner)
    previous = namespace.get("print", _MISSING)
    _trainrunner.print = _print_except_scvi_exception  # shadows the builtin in that module
    try:
        yield
    finally:
        if previous is _MISSING:
            del _trainrunner.print
        else:
            _trainrunner.print = previous


def apply_num_threads() -> int | None:
    """Give torch ``scvi.settings.num_threads`` CPU threads, when that setting is set.

    scvi-tools applies the setting once, when it is assigned; anything that changed torch's
    thread count since (another library, a notebook cell) would otherwise win. Returns the
    number applied, or ``None`` (setting unset: torch's own default is kept).
    """
    import scvi
    import torch

    n = scvi.settings.num_threads
    if n is None:
        return None
    n = int(n)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def training_run(func: F) -> F:
    """Decorator of ``train``: apply ``scvi.settings.num_threads``, silence third-party chatter."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        apply_num_threads()
        with third_party_quiet(), _no_scvi_exception_print():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
