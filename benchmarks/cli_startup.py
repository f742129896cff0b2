"""Start-up time of the command line: ``scsena --help`` and ``import scsena``.

Each command runs ``--repeats`` times in a fresh Python process (after one warm-up run,
so the files are in the page cache); the median and the slowest wall-clock times are
printed, with the load average before the runs (other jobs on the machine slow every
number here).

Run: python benchmarks/cli_startup.py [--repeats 7] [--json results/cli_startup.json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_json_option, recording, write_json  # noqa: E402

COMMANDS = {
    # the environment's own entry point when it is not on PATH (a venv not activated)
    "scsena --help": [
        shutil.which("scsena") or os.path.join(os.path.dirname(sys.executable), "scsena"),
        "--help",
    ],
    "python -c 'import scsena'": [sys.executable, "-c", "import scsena"],
    "python -c 'import scsena; scsena.SENAVAE'": [
        sys.executable,
        "-c",
        "import scsena; scsena.SENAVAE",
    ],
}


def _wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def time_commands(repeats: int) -> dict:
    """Time each command, print one line per command and return the numbers."""
    load = os.getloadavg()[0]
    print(f"cores {os.cpu_count()}, load average before: {load:.2f}")
    results = {"cores": os.cpu_count(), "load_average_before": load, "repeats": repeats}
    commands = {}
    for name, command in COMMANDS.items():
        _wall(command)  # warm-up: files in the page cache
        times = [_wall(command) for _ in range(repeats)]
        commands[name] = {
            "median_s": statistics.median(times),
            "slowest_s": max(times),
            "times_s": times,
        }
        print(
            f"{name:<45} median {statistics.median(times):.3f} s, "
            f"slowest {max(times):.3f} s ({repeats} runs)"
        )
    return {**results, "commands": commands}


def main() -> None:
    """Time each command; with ``--json``, also write the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per command")
    add_json_option(parser)
    args = parser.parse_args()
    with recording() as output:
        results = time_commands(args.repeats)
    if args.json:
        write_json(args.json, __file__, results, output)


if __name__ == "__main__":
    main()
