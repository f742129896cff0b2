"""Seconds per training epoch on the CPU by torch thread count, and scsena's automatic choice.

The default model (batch 32) on a simulated screen of 3,000 cells x 1,000 genes,
trained for 3 epochs (the first is not timed) with 1 thread, every core, and
``threads="auto"`` (the default of ``SENAVAE.train``), on the machine as it is
(``idle``) and with one busy process per core started beside it (``busy``: what a
shared machine or a notebook server running other work looks like). The 1-minute load
average is printed beside the numbers.

Run: python benchmarks/threads.py [--json benchmarks/results/threads.json]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from common import add_json_option, machine_line, quiet, recording, write_json  # noqa: E402

import scsena  # noqa: E402

BURN = "while True: pass"

TRAIN = dict(batch_size=32, enable_model_summary=False, logger=False)


class _EpochTimes:
    """Wall time of each epoch (a Lightning callback)."""

    def __init__(self):
        from lightning.pytorch.callbacks import Callback

        times = self.times = []
        threads = self.threads = []

        class Timer(Callback):
            def on_train_epoch_start(self, trainer, pl_module):
                threads.append(torch.get_num_threads())  # what train() chose
                self.t = time.perf_counter()

            def on_train_epoch_end(self, trainer, pl_module):
                times.append(time.perf_counter() - self.t)

        self.callback = Timer()


def seconds_per_epoch(n_genes: int, threads) -> tuple[float, int]:
    adata = scsena.datasets.simulate_perturbseq(
        n_cells=3000, n_genes=n_genes, n_targets=12, n_doubles=4, seed=0
    )
    scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids")
    model = scsena.SENAVAE(adata, seed=0)
    timer = _EpochTimes()
    model.train(
        max_epochs=3,
        threads=threads,
        enable_progress_bar=False,
        callbacks=[timer.callback],
        **TRAIN,
    )
    return sum(timer.times[1:]) / len(timer.times[1:]), timer.threads[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_json_option(parser)
    args = parser.parse_args()
    quiet()
    cores = os.cpu_count() or 1
    results = {}
    with recording() as lines:
        print(machine_line())
        for scenario in ("idle", "busy"):
            burners = []
            if scenario == "busy":
                burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(cores)]
                time.sleep(70)  # let the 1-minute load average see them
            try:
                for threads in [*sorted({1, cores}), "auto"]:
                    load = os.getloadavg()[0]
                    s, chosen = seconds_per_epoch(1000, threads)
                    results[f"{scenario}|{threads}"] = {
                        "seconds_per_epoch": s,
                        "threads": chosen,
                        "load": load,
                    }
                    print(
                        f"{scenario}: threads={threads} ({chosen}): {s:.2f} s per epoch "
                        f"(load average {load:.2f} on {cores} cores)"
                    )
            finally:
                for p in burners:
                    p.kill()
    if args.json:
        write_json(args.json, __file__, results, lines)


if __name__ == "__main__":
    main()
