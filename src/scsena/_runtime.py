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


def _busy_cores_elsewhere(window: float = 0.25) -> float:
    """Cores kept busy by other processes now.

    ``/proc/stat`` minus this process over ``window`` seconds (Linux); elsewhere the
    1-minute load average.
    """
    import os
    import time

    def sample() -> tuple[float, float, float]:
        with open("/proc/stat") as fh:
            values = [float(v) for v in fh.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0.0)
        own = os.times()
        return sum(values), idle, (own.user + own.system)

    try:
        total0, idle0, own0 = sample()
        time.sleep(window)
        total1, idle1, own1 = sample()
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except (AttributeError, OSError):
            return 0.0
    ticks = total1 - total0
    if ticks <= 0:
        return 0.0
    cores = os.cpu_count() or 1
    busy = (ticks - (idle1 - idle0)) / ticks * cores
    return max(0.0, busy - (own1 - own0) / window)


def auto_threads() -> int:
    """Torch CPU threads scsena chooses for training: the cores other work leaves free.

    The number of cores minus those other processes keep busy right now (measured over
    a quarter of a second), at least 1 and at most torch's own count. Threads
    competing with other processes for the same cores wait on each other at every
    step: on a busy 2-core machine one thread trained several times faster than two,
    on an idle one two were faster (benchmarks/threads.py).
    """
    import os

    import torch

    cores = os.cpu_count() or 1
    free = int(cores - _busy_cores_elsewhere() + 0.5)
    return max(1, min(torch.get_num_threads(), free))


@contextlib.contextmanager
def cpu_threads(threads, on_gpu: bool) -> Iterator[int]:
    """Torch's CPU thread count for a training run, restored afterwards; yields it.

    ``threads``: a positive int, or ``"auto"``: ``scvi.settings.num_threads`` when set,
    torch's count when ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` is set or training runs
    on a GPU, else :func:`auto_threads`.
    """
    import os

    import scvi
    import torch

    before = torch.get_num_threads()
    if threads == "auto":
        if scvi.settings.num_threads is not None:
            n = int(scvi.settings.num_threads)
        elif on_gpu or any(os.environ.get(v) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")):
            n = before
        else:
            n = auto_threads()
    elif isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1:
        n = threads
    else:
        raise ValueError(f"`threads` must be 'auto' or a positive integer, got {threads!r}.")
    if n != before:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def training_run(func: F) -> F:
    """Decorator of ``train``: apply ``scvi.settings.num_threads``, silence third-party chatter."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        apply_num_threads()
        with third_party_quiet(), _no_scvi_exception_print():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
