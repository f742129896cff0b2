"""What every benchmark shares: quiet logs, memory and epoch timing, the machine, JSON.

Each benchmark prints its report and, with ``--json PATH``, also writes its numbers
and its printed lines to ``PATH``::

    {"benchmark": ..., "command": ..., "recorded": ..., "machine": {...},
     "results": {...}, "output": [printed lines]}

``benchmarks/render.py`` builds the tables and output blocks of docs/benchmarks.md
from the JSON files in ``benchmarks/results/``.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import resource
import shlex
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Where the recorded results live; ``render.py`` reads every ``*.json`` there.
RESULTS_DIR = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------------------- logs
def quiet() -> None:
    """Silence warnings and the logs of Lightning, scvi-tools and MLflow telemetry."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)


# ----------------------------------------------------------------------------- memory
def _status_kib(field: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the process's peak RSS (Linux ``clear_refs``); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


_MAX_PEAK_MIB = 0.0


def peak_rss_mib() -> float:
    """Peak resident memory (MiB) since the last :func:`reset_peak_rss`.

    ``VmHWM`` of ``/proc/self/status`` where available, else ``getrusage``'s ``ru_maxrss``
    (which the reset also lowers on Linux).
    """
    global _MAX_PEAK_MIB
    hwm = _status_kib("VmHWM")
    peak = (
        hwm / 1024 if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    _MAX_PEAK_MIB = max(_MAX_PEAK_MIB, peak)
    return peak


def max_peak_rss_mib() -> float:
    """Largest peak RSS seen over the run (the per-phase resets hide it from getrusage)."""
    return max(_MAX_PEAK_MIB, peak_rss_mib())


def rss_mib() -> float:
    """Current resident memory (MiB); NaN where ``/proc`` is not available."""
    cur = _status_kib("VmRSS")
    return float("nan") if cur is None else cur / 1024


def process_peak_rss_mib() -> float:
    """Peak RSS of the whole process (``getrusage``), never reset."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- timing
def epoch_timer(budget_s: float | None = None):
    """A Lightning callback timing every training epoch.

    Its ``times`` hold each epoch's wall-clock seconds (CUDA synchronised) and its
    ``batches`` the number of batches each epoch ran. With ``budget_s``, training stops
    at the end of the epoch that crosses it. (Lightning is imported here, on first use,
    so that benchmarks without training start fast.)
    """
    import lightning.pytorch as pl
    import torch

    class EpochTimer(pl.Callback):
        def __init__(self):
            self.budget_s = budget_s
            self.times: list[float] = []
            self.batches: list[int] = []
            self._t0 = self._start = 0.0
            self._n = 0

        def on_train_start(self, trainer, pl_module):
            self._t0 = time.perf_counter()

        def on_train_epoch_start(self, trainer, pl_module):
            self._start = time.perf_counter()
            self._n = 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self._n += 1

        def on_train_epoch_end(self, trainer, pl_module):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self._start)
            self.batches.append(self._n)
            if self.budget_s is not None and time.perf_counter() - self._t0 > self.budget_s:
                trainer.should_stop = True

    return EpochTimer()


# ----------------------------------------------------------------------------- machine
def machine() -> dict:
    """The machine and software a benchmark ran on (torch's only if it is imported)."""
    info = {
        "processor": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = torch.__version__
        info["threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


def machine_line(device: str | None = None) -> str:
    """``machine: x86_64, 2 cores; torch V, N threads, device D (GPU)`` as benchmarks print it."""
    info = machine()
    line = f"machine: {info['processor']}, {info['cores']} cores"
    if "torch" in info:
        line += f"; torch {info['torch']}, {info['threads']} threads"
        if device is not None:
            line += f", device {device}"
            if device == "cuda" and "gpu" in info:
                line += f" ({info['gpu']})"
    return line


# ----------------------------------------------------------------------------- JSON
class _Tee:
    """A stdout that also keeps every complete line written to it."""

    def __init__(self, stream):
        self.stream = stream
        self.lines: list[str] = []
        self._partial = ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        *done, self._partial = (self._partial + text).split("\n")
        self.lines.extend(done)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


@contextmanager
def recording() -> Iterator[list[str]]:
    """Print as usual and collect the printed lines (the list is filled on exit)."""
    tee = _Tee(sys.stdout)
    lines: list[str] = []
    sys.stdout = tee
    try:
        yield lines
    finally:
        sys.stdout = tee.stream
        lines.extend(tee.lines + ([tee._partial] if tee._partial else []))


def add_json_option(parser) -> None:
    """The ``--json PATH`` option of every benchmark."""
    parser.add_argument(
        "--json",
        default=None,
        metavar="PATH",
        help="also write the numbers and the printed lines to this JSON file "
        "(benchmarks/results/NAME.json feeds docs/benchmarks.md through render.py)",
    )


def command_line(script: str) -> str:
    """The command that ran ``script`` (``python benchmarks/NAME.py ARGS``, less ``--json``)."""
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip or arg == "--json":
            skip = not skip
            continue
        if not arg.startswith("--json="):
            args.append(arg)
    return f"python benchmarks/{Path(script).name} {shlex.join(args)}".rstrip()


def write_json(path: str | Path, script: str, results: dict, output: list[str]) -> None:
    """Write one benchmark run: its command, machine, numbers and printed lines."""
    payload = {
        "benchmark": Path(script).stem,
        "command": command_line(script),
        "recorded": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "results": results,
        "output": output,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"[wrote] {path}", file=sys.stderr)


def read_results(directory: str | Path = RESULTS_DIR) -> dict[str, dict]:
    """Every recorded run in ``directory``, by file name without ``.json``."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(Path(directory).glob("*.json"))}
