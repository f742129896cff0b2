"""Training throughput: scsena against a straightforward reference, at equal maths.

Side by side in one process, on the Perturb-seq simulator at Norman 2019 scale
(5,000 genes, 105 single targets, 130 doubles; SENA's GO BP mask, Z = 105):

(a) the reference forward pass of ``_reference.py`` (float64, ``W * M`` every step,
    ``torch.inverse``, MMD on expanded differences, one-hot perturbations, batches
    built cell by cell), and
(b) scsena's ``SENAModule`` (float32) of ``preset="reference"`` fed by
    ``PairedPerturbationDataset`` through the loader of ``make_loader``, and
(c) the same for the default ``preset="scsena"`` (assignment table, balance and
    mean-shift terms, counterfactual predictions, non-negative member weights): the
    cost of its remedies, and
(d) the default with ``member_weights="free"`` (the default before pathway
    activities became non-negative weighted means of their members): the cost of
    that change alone.

First checks that both give the same loss (and gradients) from the same weights on
the same batch. Then times training steps (batch read, forward, backward, Adam step)
per batch size, alternating (a), (b) and (c) in repeated blocks so that all see the
same machine load, and reports medians over the blocks. Last, times whole epochs of
``SENAVAE.train`` (data loading and Lightning included).

Run: python benchmarks/train_throughput.py [--n-cells 20000] [--batch-sizes 32,128,512]
     [--steps 5] [--repeats 3] [--device cpu|cuda] [--threads N] [--json PATH]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from itertools import cycle
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

import scsena
from scsena.module import SENAModule
from scsena.train import PerturbationPureBatchSampler, make_loader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _reference import (  # noqa: E402
    ReferenceDataset,
    ReferenceSENA,
    load_from_scsena,
    reference_loader,
    reference_loss,
)
from common import (  # noqa: E402
    add_json_option,
    epoch_timer,
    machine_line,
    max_peak_rss_mib,
    peak_rss_mib,
    recording,
    reset_peak_rss,
    rss_mib,
    write_json,
)


# ----------------------------------------------------------------------------- device
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- setup
def build(args):
    t = time.perf_counter()
    adata = scsena.datasets.simulate_perturbseq(
        n_cells=args.n_cells,
        n_genes=args.n_genes,
        n_targets=args.n_targets,
        n_doubles=args.n_doubles,
        seed=args.seed,
    )
    scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids", gene_sets="go_bp_sena")
    model = scsena.SENAVAE(adata, seed=args.seed, preset="reference")
    default = scsena.SENAVAE(adata, seed=args.seed)
    free = scsena.SENAVAE(adata, seed=args.seed, member_weights="free")
    ds = model.data_splitter(adata).fold_dataset(["train"], args.seed)
    mask = adata.uns["scsena_mask"]
    print(
        f"data: {adata.n_obs} cells x {adata.n_vars} genes, {len(ds)} training examples, "
        f"{len(model.targets_)} targets, {len(model.term_ids_)} gene sets kept, "
        f"Z = {model.n_latent} (built in {time.perf_counter() - t:.1f} s)"
    )
    return adata, model, (default.module, free.module), ds, mask


def clone_module(module, dtype=torch.float32):
    """A new ``SENAModule`` with ``module``'s weights, built by its constructor.

    The constructor sets the masked layer up exactly as in training.
    """
    fc1 = module.fc1
    new = SENAModule(
        n_genes=fc1.in_features,
        n_targets=module.intervention.shift.shape[0],
        membership=fc1.member_mask().T.cpu().numpy(),
        n_latent=module.n_latent,
        sena_lambda=fc1.lambda_,
        n_hidden=module.d1.out_features,
        mmd_sigma=module.mmd_sigma,
        lambda_l1=module.lambda_l1,
        kl_reference_scaling=module.kl_reference_scaling,
    ).to(dtype)
    new.load_state_dict(module.state_dict())
    return new


def scsena_loss(module, batch, eps=None, temperature=1.0):
    """scsena's loss through the module's own pieces; ``eps`` fixes the sampling noise."""
    inf = module.inference(batch["x"], use_mean=eps is not None)
    if eps is not None:
        inf["z"] = inf["mu"] + inf["var"].sqrt() * eps.to(inf["mu"].dtype)
    gen = module.generative(inf["z"], batch["codes"], temperature)
    return module.loss(batch, inf, gen, alpha=1.0, beta=1.0).loss


def check_agreement(module, ref, ds, ref_ds, batch_size, seed) -> dict:
    """Same weights, same batch, same noise: compare losses and gradients."""
    idx = batches_for(ds, batch_size, 1, seed)[0][0]
    batch = ds[idx]
    x, y, c = next(iter(reference_loader(ref_ds, [idx])))
    same_data = (
        torch.equal(x, batch["x"].double())
        and torch.equal(y, batch["y"].double())
        and torch.equal(c.argmax(1), batch["codes"][:, 0])
    )
    print(f"data paths give identical batches: {same_data}")
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn(len(idx), module.n_latent, generator=gen, dtype=torch.float64)

    ref.zero_grad(set_to_none=True)
    y_hat, x_rec, mu, var = ref(x, c, 1.0, eps)
    l_ref = reference_loss(ref, y_hat, y, x_rec, x, mu, var)
    l_ref.backward()

    l32 = scsena_loss(module, batch, eps)
    m64 = clone_module(module, torch.float64)
    b64 = {k: (v.double() if v.is_floating_point() else v) for k, v in batch.items()}
    m64.zero_grad(set_to_none=True)
    l64 = scsena_loss(m64, b64, eps)
    l64.backward()
    l_ref, l32, l64 = float(l_ref.detach()), float(l32.detach()), float(l64.detach())
    print(
        f"loss on one batch of {len(idx)} (alpha = beta = tau = 1): reference float64 "
        f"{l_ref:.10f}, scsena float32 {l32:.10f} (abs diff {abs(l32 - l_ref):.2e}, "
        f"relative {abs(l32 - l_ref) / abs(l_ref):.1e}); scsena float64 {l64:.12f} "
        f"(abs diff {abs(l64 - l_ref):.2e})"
    )
    grads = gradient_agreement(m64, ref)
    ref.zero_grad(set_to_none=True)
    losses = {"reference_float64": l_ref, "scsena_float32": l32, "scsena_float64": l64}
    return {"identical_batches": same_data, "batch_size": len(idx), "loss": losses, **grads}


def gradient_agreement(m64, ref) -> dict:
    """Largest gradient difference, float64 module against the reference (after backward)."""
    ref_params = {
        "fc1.weight": ref.fc1.weight,
        "fc1.bias": ref.fc1.bias,
        "fc_mean.weight": ref.fc_mean.weight,
        "fc_var.weight": ref.fc_var.weight,
        "intervention.c1.weight": ref.c1.weight,
        "intervention.c2.weight": ref.c2.weight,
        "intervention.shift": ref.c_shift,
        "causal.G": ref.G,
        "d1.weight": ref.d1.weight,
        "d2.weight": ref.d2.weight,
    }
    params = dict(m64.named_parameters())
    ref_grads = {k: p.grad for k, p in ref_params.items()}
    # scsena stores the member weights only: compare the reference's gradient there
    # (its non-member gradient is exactly zero, printed below)
    fc1 = m64.fc1
    members = (fc1.term_index, fc1.gene_index)
    outside = ref_grads["fc1.weight"].clone()
    outside[members] = 0
    ref_grads["fc1.weight"] = ref_grads["fc1.weight"][members]
    gdiff = {k: float((params[k].grad - g).abs().max()) for k, g in ref_grads.items()}
    worst = max(gdiff, key=gdiff.get)
    gscale = max(float(p.grad.abs().max()) for p in ref_params.values())
    outside_max = float(outside.abs().max())
    print(
        f"gradients of {len(gdiff)} parameter tensors, scsena float64 vs reference: max abs "
        f"diff {gdiff[worst]:.2e} ({worst}; largest gradient entry {gscale:.2e}); "
        f"reference's largest non-member fc1 gradient {outside_max:.1e}"
    )
    return {
        "gradient_max_abs_diff": gdiff[worst],
        "gradient_worst_tensor": worst,
        "gradient_largest_entry": gscale,
        "reference_non_member_gradient": outside_max,
    }


# ----------------------------------------------------------------------------- steps
def batches_for(ds, batch_size, min_batches, seed):
    """One epoch of example-index batches, perturbation-pure when the data allows it."""
    loader = make_loader(ds, batch_size, shuffle=True, drop_last=True, seed=seed)
    mixed = len(loader) < min_batches
    if mixed:
        # fewer than batch_size training cells per perturbation: batches mix
        # perturbations (the cost of a step does not depend on which cells it holds)
        sampler = PerturbationPureBatchSampler(
            np.zeros(len(ds), dtype=np.int64), batch_size, seed=seed
        )
        loader = DataLoader(ds, sampler=sampler, batch_size=None)
    return list(loader.sampler), mixed


class Runner:
    """Times training steps of one path: batch read, then forward/backward/Adam."""

    def __init__(self, name, step, loader, device):
        self.name = name
        self.step = step
        self.it = cycle(loader)
        self.device = device
        self.data_s: list[float] = []
        self.step_s: list[float] = []
        self.peak_mib = 0.0
        self.peak_gpu_mib = 0.0

    def block(self, n_steps: int, budget_s: float) -> None:
        reset = reset_peak_rss()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        data_s = step_s = 0.0
        n = 0
        start = time.perf_counter()
        while n < n_steps:
            t0 = time.perf_counter()
            batch = next(self.it)
            t1 = time.perf_counter()
            self.step(batch)
            sync(self.device)
            t2 = time.perf_counter()
            data_s += t1 - t0
            step_s += t2 - t1
            n += 1
            if time.perf_counter() - start > budget_s:
                break
        self.data_s.append(data_s / n)
        self.step_s.append(step_s / n)
        if reset:
            self.peak_mib = max(self.peak_mib, peak_rss_mib())
        if self.device.type == "cuda":
            self.peak_gpu_mib = max(
                self.peak_gpu_mib, torch.cuda.max_memory_allocated(self.device) / 2**20
            )

    def summary(self, batch_size: int) -> dict:
        data = float(np.median(self.data_s))
        step = float(np.median(self.step_s))
        return {
            "data_ms": 1e3 * data,
            "step_ms": 1e3 * step,
            "cells_s": batch_size / (data + step),
            "compute_cells_s": batch_size / step,
            "peak_mib": self.peak_mib,
            "peak_gpu_mib": self.peak_gpu_mib,
            "n_blocks": len(self.step_s),
        }


def make_scsena_step(module, device):
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)

    def step(batch):
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        _, _, out = module(
            batch,
            generative_kwargs={"temperature": 1.0},
            loss_kwargs={"alpha": 1.0, "beta": 1.0, "temperature": 1.0},
        )
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    return step


def make_reference_step(ref, device):
    opt = torch.optim.Adam(ref.parameters(), lr=1e-3)

    def step(batch):
        x, y, c = (v.to(device, non_blocking=True) for v in batch)
        y_hat, x_rec, mu, var = ref(x, c, 1.0)
        loss = reference_loss(ref, y_hat, y, x_rec, x, mu, var)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def mmd_tensor_gib(batch_size: int, n_genes: int) -> float:
    """Size of one ``2B x 2B x G`` float64 tensor of the reference MMD, GiB."""
    return (2 * batch_size) ** 2 * n_genes * 8 / 2**30


def bench_steps(args, module, default_modules, ref_template, ds, ref_ds, device) -> list[dict]:
    """Time the paths' training steps at every batch size; returns one dict per size."""
    print(
        f"\n== training steps (batch read + forward + backward + Adam); {args.repeats} "
        f"alternating blocks of up to {args.steps} steps per path (at most "
        f"{args.block_seconds:.0f} s a block), medians over blocks =="
    )
    rows = []
    for bs in args.batch_sizes:
        batches, mixed = batches_for(ds, bs, args.warmup + args.steps, args.seed)
        note = " (batches mix perturbations: too few cells per perturbation)" if mixed else ""
        rss = rss_mib()
        print(f"\nbatch {bs}: {len(batches)} batches per epoch{note}; RSS before: {rss:.0f} MiB")
        runners, skipped_gib = make_runners(
            args, bs, batches, (module, default_modules, ref_template), ds, ref_ds, device
        )
        run_blocks(runners, args)
        res = {r.name: r.summary(bs) for r in runners}
        del runners
        print_step_table(bs, res, device)
        row = {"batch_size": bs, "batches_per_epoch": len(batches), "mixed": mixed}
        row.update(rss_before_mib=rss, paths=res, reference_skipped_gib=skipped_gib)
        rows.append({**row, **compare_paths(bs, res)})
    ratios = [(r["batch_size"], r["scsena_over_reference"]) for r in rows]
    ratios = [(b, r["cells_s"]) for b, r in ratios if r is not None]
    if ratios:
        print(
            "\nsummary, scsena / reference cells/s: "
            + ", ".join(f"batch {b}: {r:.1f}x" for b, r in ratios)
        )
    return rows


def make_runners(args, bs, batches, modules, ds, ref_ds, device) -> tuple[list, float | None]:
    """The paths at batch ``bs`` (reference first, unless its MMD tensor is too large).

    Returns the runners and the size (GiB) of the reference's MMD tensor when it was
    skipped, else None.
    """
    module, (default_module, free_module), ref_template = modules
    module_b = clone_module(module).to(device).train()
    default_b = copy.deepcopy(default_module).to(device).train()
    free_b = copy.deepcopy(free_module).to(device).train()
    runners = [
        Runner(
            "scsena",
            make_scsena_step(module_b, device),
            DataLoader(ds, sampler=batches, batch_size=None),
            device,
        ),
        Runner(
            "default",
            make_scsena_step(default_b, device),
            DataLoader(ds, sampler=batches, batch_size=None),
            device,
        ),
        Runner(
            "free",
            make_scsena_step(free_b, device),
            DataLoader(ds, sampler=batches, batch_size=None),
            device,
        ),
    ]
    ref_gib = mmd_tensor_gib(bs, ds.matrix.shape[1])
    if ref_gib > args.ref_max_gib:
        print(
            f"reference skipped at batch {bs}: its MMD expands a 2B x 2B x G float64 "
            f"tensor of {ref_gib:.1f} GiB (limit --ref-max-gib {args.ref_max_gib})"
        )
        return runners, ref_gib
    ref_b = copy.deepcopy(ref_template).to(device).train()
    reference = Runner(
        "reference", make_reference_step(ref_b, device), reference_loader(ref_ds, batches), device
    )
    return [reference, *runners], None


def run_blocks(runners: list, args) -> None:
    """Warm every path up (untimed), then time alternating blocks (order flips each block)."""
    for r in runners:  # warm-up (allocator, Adam state), not timed
        r.block(args.warmup, float("inf"))
        r.data_s.clear()
        r.step_s.clear()
        r.peak_mib = 0.0
    for rep in range(args.repeats):
        order = runners if rep % 2 == 0 else runners[::-1]
        for r in order:
            r.block(args.steps, args.block_seconds)


def print_step_table(bs: int, res: dict, device) -> None:
    """One line per path: batch read, step, cells/s and peak memory."""
    header = (
        f"{'batch':>5} {'path':<10} {'data ms/batch':>13} {'step ms':>9} {'cells/s':>9} "
        f"{'compute cells/s':>15} {'peak RSS MiB':>12}"
    )
    if device.type == "cuda":
        header += f" {'peak GPU MiB':>12}"
    print(
        "paths: reference = the published form; scsena = preset='reference'; "
        "default = preset='scsena'; free = the default with member_weights='free'"
    )
    print(header)
    for name, s in res.items():
        line = (
            f"{bs:>5} {name:<10} {s['data_ms']:>13.2f} {s['step_ms']:>9.1f} "
            f"{s['cells_s']:>9.1f} {s['compute_cells_s']:>15.1f} {s['peak_mib']:>12.0f}"
        )
        if device.type == "cuda":
            line += f" {s['peak_gpu_mib']:>12.0f}"
        print(line)


def _step_ratio(bs: int, path: dict, other: dict, label: str) -> dict:
    """Print and return ``path``'s step time over ``other``'s (and with the batch read)."""
    ratio = {
        "step": path["step_ms"] / other["step_ms"],
        "read_and_step": (path["data_ms"] + path["step_ms"])
        / (other["data_ms"] + other["step_ms"]),
    }
    print(
        f"batch {bs}: default / {label} step time = "
        f"{ratio['step']:.2f}x (batch read + step {ratio['read_and_step']:.2f}x)"
    )
    return ratio


def compare_paths(bs: int, res: dict) -> dict:
    """Print and return scsena / reference and default / preset='reference' ratios."""
    versus_reference = None
    if "reference" in res:
        a, b = res["reference"], res["scsena"]
        versus_reference = {
            "cells_s": b["cells_s"] / a["cells_s"],
            "compute_cells_s": b["compute_cells_s"] / a["compute_cells_s"],
            "batch_read": a["data_ms"] / b["data_ms"],
        }
        print(
            f"batch {bs}: scsena / reference = {versus_reference['cells_s']:.1f}x cells/s "
            f"(compute only {versus_reference['compute_cells_s']:.1f}x, "
            f"batch read {versus_reference['batch_read']:.0f}x faster)"
        )
    versus_preset = _step_ratio(bs, res["default"], res["scsena"], "preset='reference'")
    versus_free = _step_ratio(bs, res["default"], res["free"], "member_weights='free'")
    return {
        "scsena_over_reference": versus_reference,
        "default_over_reference_preset": versus_preset,
        "default_over_free_weights": versus_free,
    }


# ----------------------------------------------------------------------------- epochs
def bench_epochs(args, adata, device) -> dict:
    """Time whole epochs of ``SENAVAE.train``; returns their numbers."""
    print(
        f"\n== SENAVAE(preset={args.epoch_preset!r}).train(max_epochs={args.epochs}, "
        f"batch_size={args.epoch_batch_size}) =="
    )
    n_cells = args.epoch_n_cells or args.n_cells
    if n_cells != adata.n_obs:
        adata = scsena.datasets.simulate_perturbseq(
            n_cells=n_cells,
            n_genes=args.n_genes,
            n_targets=args.n_targets,
            n_doubles=args.n_doubles,
            seed=args.seed,
        )
        scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids", gene_sets="go_bp_sena")
    print(f"data: {adata.n_obs} cells x {adata.n_vars} genes (same simulator settings)")
    model = scsena.SENAVAE(adata, seed=args.seed, preset=args.epoch_preset)
    timer = epoch_timer()
    reset = reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    model.train(
        max_epochs=args.epochs,
        batch_size=args.epoch_batch_size,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        callbacks=[timer],
        enable_progress_bar=False,
    )
    total = time.perf_counter() - t
    result = {"n_cells": adata.n_obs, "train_s": total, "epoch_times_s": timer.times}
    result.update(batches=timer.batches, peak_rss_mib=peak_rss_mib() if reset else None)
    if device.type == "cuda":
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    print_epochs(args, result)
    return result


def print_epochs(args, result: dict) -> None:
    """Every epoch's time, the median and the extrapolated full training."""
    bs, times, batches = args.epoch_batch_size, result["epoch_times_s"], result["batches"]
    for e, (s, nb) in enumerate(zip(times, batches)):
        print(
            f"epoch {e}: {s:.1f} s, {nb} batches, {nb * bs} cells, "
            f"{nb * bs / s:.1f} cells/s, {1e3 * s / nb:.1f} ms/batch"
        )
    med = float(np.median(times))
    print(
        f"train() total {result['train_s']:.1f} s for {args.epochs} epochs; median epoch "
        f"{med:.1f} s = {batches[-1] * bs / med:.1f} cells/s ({1e3 * med / batches[-1]:.1f} "
        f"ms/batch, data loading and Lightning included)"
    )
    per_batch = med / batches[-1]
    full_s = args.full_epochs * args.full_batches * per_batch
    result.update(median_epoch_s=med, extrapolated_full_s=full_s)
    print(
        f"extrapolated full training: {args.full_epochs} epochs x {args.full_batches} batches "
        f"x {1e3 * per_batch:.1f} ms/batch (median of the {len(times)} measured epochs) "
        f"= {full_s / 3600:.1f} h"
    )
    mem = ""
    if result["peak_rss_mib"] is not None:
        mem = f"peak RSS during train(): {result['peak_rss_mib']:.0f} MiB"
    if "peak_gpu_mib" in result:
        mem += f", peak GPU memory {result['peak_gpu_mib']:.0f} MiB"
    if mem:
        print(mem)


# ----------------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-cells", type=int, default=20_000)
    parser.add_argument("--n-genes", type=int, default=5_000)
    parser.add_argument("--n-targets", type=int, default=105)
    parser.add_argument("--n-doubles", type=int, default=130)
    parser.add_argument(
        "--batch-sizes", type=lambda s: [int(v) for v in s.split(",")], default=[32, 128, 512]
    )
    parser.add_argument("--steps", type=int, default=5, help="timed steps per block")
    parser.add_argument("--repeats", type=int, default=3, help="alternating blocks per path")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per path")
    parser.add_argument(
        "--block-seconds", type=float, default=15.0, help="end a block early after this long"
    )
    parser.add_argument(
        "--ref-max-gib",
        type=float,
        default=4.0,
        help="skip the reference when one tensor of its MMD would exceed this (GiB)",
    )
    parser.add_argument("--epochs", type=int, default=2, help="epochs of SENAVAE.train; 0 skips")
    parser.add_argument("--epoch-batch-size", type=int, default=32)
    parser.add_argument("--epoch-preset", choices=["scsena", "reference"], default="scsena")
    parser.add_argument(
        "--epoch-n-cells",
        type=int,
        default=10_000,
        help="cells of the data trained on by SENAVAE.train (0: same as --n-cells); the "
        "time per batch does not depend on it, the number of batches per epoch does",
    )
    parser.add_argument(
        "--full-epochs", type=int, default=100, help="epochs of the extrapolated full training"
    )
    parser.add_argument(
        "--full-batches",
        type=int,
        default=1135,
        help="batches per epoch of the extrapolated full training (1135: batches of 32 on "
        "the 100,000-cell simulation, as printed by predict_throughput.py)",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    add_json_option(parser)
    return parser.parse_args()


def run(args: argparse.Namespace, device: torch.device) -> dict:
    """Agreement check, training steps and epochs; returns every number."""
    print(machine_line(device.type))
    t_all = time.perf_counter()
    torch.manual_seed(args.seed)
    adata, model, default_modules, ds, mask = build(args)
    module = model.module
    ref = ReferenceSENA(mask_membership(mask), len(model.targets_), model.n_latent)
    load_from_scsena(ref, module)
    ref_ds = ReferenceDataset(
        ds.matrix, ds.perturbed, ds.partners, ds.codes[:, 0].numpy(), len(model.targets_)
    )
    members = int((ref.fc1.mask != 0).sum())
    n_genes, n_terms = ref.fc1.mask.shape
    print(
        f"dense reference mask: {ref.fc1.mask.numel() * 8 / 2**20:.0f} MiB float64, "
        f"{members:,} member pairs ({100 * members / (n_genes * n_terms):.2f}% of G x T)"
    )
    results = {"data": {"n_cells": adata.n_obs, "n_genes": n_genes, "n_terms": n_terms}}
    results["data"].update(training_examples=len(ds), n_latent=model.n_latent)
    results["mask"] = {"dense_mib": ref.fc1.mask.numel() * 8 / 2**20, "member_pairs": members}
    results["agreement"] = check_agreement(module, ref, ds, ref_ds, 32, args.seed)
    results["steps"] = bench_steps(args, module, default_modules, ref, ds, ref_ds, device)
    if args.epochs > 0:
        results["epochs"] = bench_epochs(args, adata, device)
    peak, total = max_peak_rss_mib(), time.perf_counter() - t_all
    print(f"\nlargest peak RSS over the run: {peak:.0f} MiB; total {total:.0f} s")
    return {**results, "peak_rss_mib": peak, "total_s": total}


def main() -> None:
    """Run the benchmark; with ``--json``, also write the numbers."""
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    with recording() as output:
        results = run(args, device)
    if args.json:
        write_json(args.json, __file__, results, output)


def mask_membership(uns_mask):
    """``G x T`` membership of the mask stored by ``setup_anndata``."""
    return scsena.gene_sets.GeneSetMask.from_uns(uns_mask).membership


if __name__ == "__main__":
    main()
