"""Peak and current resident memory of this process (Linux /proc, else getrusage)."""

from __future__ import annotations

import resource


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
    cur = _status_kib("VmRSS")
    return float("nan") if cur is None else cur / 1024
