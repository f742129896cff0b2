"""Start-up time of the command line: ``scsena --help`` and ``import scsena``.

Each command runs ``--repeats`` times in a fresh Python process (after one warm-up run,
so the files are in the page cache); the median and the slowest wall-clock times are
printed, with the load average before the runs (other jobs on the machine slow every
number here).

Run: python benchmarks/cli_startup.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "scsena --help": [shutil.which("scsena") or "scsena", "--help"],
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


def main() -> None:
    """Time each command and print one line per command."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per command")
    args = parser.parse_args()
    print(f"cores {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")
    for name, command in COMMANDS.items():
        _wall(command)  # warm-up: files in the page cache
        times = [_wall(command) for _ in range(args.repeats)]
        print(
            f"{name:<45} median {statistics.median(times):.3f} s, "
            f"slowest {max(times):.3f} s ({args.repeats} runs)"
        )


if __name__ == "__main__":
    main()
