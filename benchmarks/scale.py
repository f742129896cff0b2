"""Scale: many perturbation targets, and training from an on-disk (backed) h5ad.

Two measurements, each in its own subprocess so peak RSS is per configuration:

1. ``targets``: time and peak memory per training step for P = 1,000 and 10,000
   single targets (the intervention encoder looks up one column per target: no
   P x P or P-wide one-hot tensor is formed; the latent dimension is ``--n-latent``).
2. ``backed``: a simulated screen written to disk in chunks (never held in memory
   whole), then trained from ``anndata.read_h5ad(path, backed="r")`` for a fixed number
   of steps; peak RSS for two file sizes shows whether memory stays flat as cells grow.

Run: python benchmarks/scale.py targets --n-targets 1000 10000 [--json PATH]
     python benchmarks/scale.py backed --n-cells 100000 1000000 --n-genes 2000 [--json PATH]

Each child prints its numbers as one JSON line; ``--json`` collects them in one file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    add_json_option,
    process_peak_rss_mib,
    quiet,
    recording,
    write_json,
)


def run_targets(n_targets: int, n_latent: int, n_genes: int, n_terms: int, steps: int) -> dict:
    """Time training steps of the module with ``n_targets`` targets."""
    import numpy as np
    import scipy.sparse as sp
    import torch

    from scsena.module import SENAModule

    rng = np.random.default_rng(0)
    membership = sp.random(n_genes, n_terms, density=0.02, random_state=0, format="csr")
    membership.data[:] = 1
    module = SENAModule(n_genes, n_targets, membership, n_latent)
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    batch = 32
    times = []
    for i in range(steps + 2):
        t = int(rng.integers(n_targets))
        tensors = {
            "x": torch.rand(batch, n_genes),
            "y": torch.rand(batch, n_genes),
            "codes": torch.tensor([[t, -1]] * batch),
        }
        start = time.perf_counter()
        _, _, loss = module(tensors, loss_kwargs={"alpha": 1.0, "beta": 1.0})
        opt.zero_grad()
        loss.loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - start)
    params = sum(p.numel() for p in module.parameters())
    return {
        "n_targets": n_targets,
        "n_latent": n_latent,
        "ms_per_step": 1000 * float(np.median(times)),
        "parameters": params,
        "peak_rss_mib": process_peak_rss_mib(),
    }


def write_backed(path: str, n_cells: int, n_genes: int, chunk: int) -> None:
    """Simulate ``n_cells`` in chunks and append them to an h5ad on disk."""
    import anndata as ad
    import h5py
    import pandas as pd
    from anndata.io import sparse_dataset, write_elem

    import scsena

    n_chunks = -(-n_cells // chunk)
    labels, names = [], []
    var = None
    with h5py.File(path, "w") as f:
        for k in range(n_chunks):
            part = scsena.datasets.simulate_perturbseq(
                n_cells=min(chunk, n_cells - k * chunk),
                n_genes=n_genes,
                n_targets=100,
                n_doubles=50,
                seed=0,
            )
            # every chunk repeats the same simulated screen (same genes and design): the
            # content is irrelevant to memory and speed, and the file grows with n_cells
            labels.extend(part.obs["guide_ids"].tolist())
            names.extend(f"c{k}_{i}" for i in range(part.n_obs))
            if k == 0:
                var = part.var.copy()
                write_elem(f, "X", part.X)
            else:
                sparse_dataset(f["X"]).append(part.X)
            del part
        obs = pd.DataFrame({"guide_ids": labels}, index=names)
        write_elem(f, "obs", obs)
        write_elem(f, "var", var)
        for key in ("obsm", "varm", "obsp", "varp", "layers", "uns"):
            write_elem(f, key, {})
    ad.read_h5ad(path, backed="r").file.close()


def run_backed(path: str, steps: int) -> dict:
    """Train a few steps from a backed file."""
    import anndata as ad

    import scsena

    quiet()
    t = time.perf_counter()
    adata = ad.read_h5ad(path, backed="r")
    scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids")
    setup_s = time.perf_counter() - t
    model = scsena.SENAVAE(adata, seed=0)
    t = time.perf_counter()
    model.train(
        max_epochs=1,
        limit_train_batches=steps,
        enable_progress_bar=False,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        select_best_epoch=False,
    )
    train_s = time.perf_counter() - t
    return {
        "n_cells": adata.n_obs,
        "n_genes": adata.n_vars,
        "setup_s": setup_s,
        "steps": steps,
        "ms_per_step": 1000 * train_s / steps,
        "peak_rss_mib": process_peak_rss_mib(),
        "file_gib": os.path.getsize(path) / 2**30,
    }


def _child(argv: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "_child", *argv], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def parse_args() -> argparse.Namespace:
    """``targets`` and ``backed`` (and ``_child``, the measurement run in a subprocess)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("targets")
    t.add_argument("--n-targets", type=int, nargs="+", default=[1000, 10000])
    t.add_argument("--n-latent", type=int, default=105)
    t.add_argument("--n-genes", type=int, default=2000)
    t.add_argument("--n-terms", type=int, default=1000)
    t.add_argument("--steps", type=int, default=10)
    add_json_option(t)
    b = sub.add_parser("backed")
    b.add_argument("--n-cells", type=int, nargs="+", default=[100_000, 1_000_000])
    b.add_argument("--n-genes", type=int, default=2000)
    b.add_argument("--chunk", type=int, default=50_000)
    b.add_argument("--steps", type=int, default=100)
    b.add_argument("--dir", default=".")
    add_json_option(b)
    c = sub.add_parser("_child")
    c.add_argument("job")
    c.add_argument("args", nargs="*")
    return parser.parse_args()


def run_child(job: str, a: list[str]) -> None:
    """One measurement, in this (fresh) process: print its numbers as one JSON line."""
    if job == "targets":
        res = run_targets(int(a[0]), int(a[1]), int(a[2]), int(a[3]), int(a[4]))
    elif job == "write":
        t0 = time.perf_counter()
        write_backed(a[0], int(a[1]), int(a[2]), int(a[3]))
        res = {"write_s": time.perf_counter() - t0, "peak_rss_mib": process_peak_rss_mib()}
    else:
        res = run_backed(a[0], int(a[1]))
    print(json.dumps(res))


def measure_targets(args: argparse.Namespace) -> list[dict]:
    """One subprocess per number of targets; prints and returns their numbers."""
    runs = []
    for p in args.n_targets:
        sizes = (p, args.n_latent, args.n_genes, args.n_terms, args.steps)
        runs.append(_child(["targets", *map(str, sizes)]))
        print(json.dumps(runs[-1]))
    return runs


def measure_backed(args: argparse.Namespace) -> list[dict]:
    """Per number of cells: write the file, then train from it backed (two subprocesses)."""
    runs = []
    for n in args.n_cells:
        path = os.path.join(args.dir, f"scale_{n}.h5ad")
        w = _child(["write", path, str(n), str(args.n_genes), str(args.chunk)])
        runs.append({"n_cells": n, **{f"write_{k}": v for k, v in w.items()}})
        print(json.dumps(runs[-1]))
        runs.append(_child(["backed", path, str(args.steps)]))
        print(json.dumps(runs[-1]))
    return runs


def main() -> None:
    """Run ``targets`` or ``backed``; with ``--json``, also write the numbers."""
    args = parse_args()
    if args.what == "_child":
        run_child(args.job, args.args)
        return
    with recording() as output:
        print(f"{os.cpu_count()} cores")
        measure = measure_targets if args.what == "targets" else measure_backed
        runs = measure(args)
    if args.json:
        write_json(args.json, __file__, {"what": args.what, "runs": runs}, output)


if __name__ == "__main__":
    main()
