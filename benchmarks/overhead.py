"""What the reliability checks cost: seconds per training epoch and per model load.

Training checks every epoch that the loss and weights are finite (and keeps a copy of
the last finite weights); loading checks dtypes, sizes, the saved weights against the
built module and their finiteness. This script times both on one machine for the code
it imports; run it for two checkouts (``PYTHONPATH=<checkout>/src``) in alternation to
compare them. The default model on ``simulate_perturbseq(n_cells=6000, n_genes=2000,
n_targets=20, n_doubles=10)``, batch 32, one torch thread; ``--rounds`` epochs timed
after one untimed, and ``--rounds`` loads of a saved model after one untimed.

Run: python benchmarks/overhead.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import scvi
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import quiet  # noqa: E402

import scsena  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    quiet()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    scvi.settings.num_threads = 1
    adata = scsena.datasets.simulate_perturbseq(
        n_cells=6000, n_genes=2000, n_targets=20, n_doubles=10, seed=0
    )
    scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids")
    model = scsena.SENAVAE(adata, seed=0)
    times: list[float] = []

    from lightning.pytorch.callbacks import Callback

    class Timer(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            self.t = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            times.append(time.perf_counter() - self.t)

    model.train(
        max_epochs=args.rounds + 1,
        batch_size=32,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        callbacks=[Timer()],
    )
    loads = []
    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp) / "m")
        for _ in range(args.rounds + 1):
            t = time.perf_counter()
            scsena.SENAVAE.load(Path(tmp) / "m", adata=adata)
            loads.append(time.perf_counter() - t)
    print(
        f"{scsena.__file__}: epoch median {statistics.median(times[1:]):.3f} s, "
        f"load median {statistics.median(loads[1:]):.3f} s"
    )


if __name__ == "__main__":
    main()
