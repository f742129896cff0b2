"""Write the tables and output blocks of the docs from benchmarks/results/*.json.

docs/benchmarks.md (speed and memory) and the batch and readout sections of
docs/results.md are rewritten.

Each generated part of the page sits between two comment lines (blank lines around
the part)::

    <!-- generated: NAME (python benchmarks/render.py) -->

    ...

    <!-- end generated: NAME -->

and is rewritten from the recorded runs (``--json`` of each benchmark, saved as
``benchmarks/results/NAME.json``); the text around them is written by hand.

Run: python benchmarks/render.py [--check] [--page docs/benchmarks.md]
(without ``--page``: every page that has generated parts)
(``--check``: change nothing, exit 1 when the page differs from the results.)
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, read_results  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"
BEGIN = "<!-- generated: {name} (python benchmarks/render.py) -->"
END = "<!-- end generated: {name} -->"
_SECTION = re.compile(
    r"(<!-- generated: (?P<name>[\w-]+) \(python benchmarks/render\.py\) -->\n)"
    r"(?P<body>.*?)"
    r"(<!-- end generated: (?P=name) -->)",
    re.S,
)


# ----------------------------------------------------------------------------- pieces
def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def output_block(lines: list[str]) -> str:
    """Printed lines as a fenced code block."""
    return "```\n" + "\n".join(lines) + "\n```"


def _only(runs: list[dict]) -> dict:
    if len(runs) != 1:
        raise ValueError(f"expected the results of one training run, found {len(runs)}")
    return runs[0]


# ----------------------------------------------------------------------------- summary
def reference_rows(throughput: dict) -> list[list[str]]:
    """scsena / reference cells/s per batch size (or why the reference could not run)."""
    rows = []
    for step in throughput["results"]["steps"]:
        bs, ratio = step["batch_size"], step["scsena_over_reference"]
        label = "same" if rows else "training cells/s, scsena / reference form, same CPU"
        label += f", batch {bs}"
        if ratio is None:
            gib = step["reference_skipped_gib"]
            rows.append([label, f"reference cannot run (one {gib:.0f} GiB MMD tensor)"])
        elif rows:
            rows.append([label, f"**{ratio['cells_s']:.1f}x**"])
        else:
            paths = step["paths"]
            rows.append(
                [
                    label,
                    f"**{ratio['cells_s']:.1f}x** ({paths['scsena']['cells_s']:,.1f} vs "
                    f"{paths['reference']['cells_s']:,.1f} cells/s)",
                ]
            )
    return rows


def full_training_rows(cpu: dict, gpu_full: dict, gpu_cut: dict) -> list[list[str]]:
    """Duration of the 100-epoch run on the CPU and on the GPU."""
    rows = []
    run, res = _only(cpu["results"]["runs"]), cpu["results"]
    size = f"{run['epochs']} epochs, {res['n_cells']:,} cells x {res['n_genes']:,} genes"
    if run["extrapolated_s"] is None:
        cpu_time = f"**{run['train_s'] / 60:.1f} min** (measured in full)"
    else:
        cpu_time = f"**{run['extrapolated_s'] / 60:.1f} min** (extrapolated)"
    cores = cpu["machine"]["cores"]
    rows.append([f"{size}, {cores}-core CPU, batch {run['batch_size']}", cpu_time])
    full, cut = _only(gpu_full["results"]["runs"]), _only(gpu_cut["results"]["runs"])
    gpu = gpu_full["machine"]["gpu"].removeprefix("NVIDIA ")
    rows.append(
        [
            f"{size}, one {gpu} GPU",
            f"**{full['train_s']:.0f} s at batch {full['batch_size']}** (measured); "
            f"{cut['extrapolated_s'] / 60:.1f} min at batch {cut['batch_size']} "
            f"({cut['epochs_run']} epochs measured, the rest extrapolated)",
        ]
    )
    return rows


def inference_rows(predict: dict) -> list[list[str]]:
    """Prediction and pathway-activity cells/s."""
    timings = predict["results"]["timings"]
    preds = [t for t in timings if t["name"].startswith("predict_perturbation")]
    activity = next(t for t in timings if t["name"].startswith("get_pathway_activity"))
    lo = min(round(t["cells_per_s"], -2) for t in preds)
    hi = max(round(t["cells_per_s"], -2) for t in preds)
    return [
        [
            f"prediction, {preds[0]['n_cells']:,} cells (CPU)",
            f"{lo:,.0f}-{hi:,.0f} predicted cells/s",
        ],
        [
            f"pathway activity, {activity['n_cells']:,} cells (CPU)",
            f"{activity['cells_per_s']:,.0f} cells/s",
        ],
    ]


def mask_rows(data_prep: dict, throughput: dict) -> list[list[str]]:
    """Mask building over every GO BP term; the dense mask that is never formed."""
    every = data_prep["results"]["every_term"]
    data = throughput["results"]["data"]
    dense_millions = round(data["n_genes"] * data["n_terms"] / 1e6)
    pairs = throughput["results"]["mask"]["member_pairs"]
    return [
        [
            f"mask building, {every['n_genes']:,} genes x all {every['n_terms']:,} GO BP "
            "terms (CPU)",
            f"{every['median_s']:.2f} s (median of {every['calls']})",
        ],
        [
            "dense `G x T` float64 mask",
            f"never formed (member pairs only: {pairs:,} of {dense_millions} million)",
        ],
    ]


def preset_row(presets: dict) -> list[str]:
    """Step time of the default preset over the reference preset's."""
    ratios = ", ".join(
        f"**{s['default_over_reference_preset']['step']:.2f}x** at batch {s['batch_size']}"
        for s in presets["results"]["steps"]
    )
    return [
        'training step of the default (`preset="scsena"`) / `preset="reference"`, same CPU',
        f"{ratios} (at most 1.25x required)",
    ]


def startup_row(startup: dict) -> list[str]:
    """``scsena --help`` start-up time."""
    res = startup["results"]
    help_ = res["commands"]["scsena --help"]
    load = math.floor(res["load_average_before"])
    return [
        f"`scsena --help` ({res['cores']}-core CPU, load average about {load})",
        f"**{help_['median_s']:.2f} s** median ({help_['slowest_s']:.2f} s slowest of "
        f"{res['repeats']}); was 17.5 s when `import scsena` loaded torch",
    ]


def summary(results: dict[str, dict]) -> str:
    """The summary table at the top of the page."""
    rows = reference_rows(results["train_throughput"])
    rows += full_training_rows(
        results["full_training_cpu"],
        results["full_training_gpu_batch128"],
        results["full_training_gpu_batch32"],
    )
    rows += inference_rows(results["predict_throughput"])
    rows += mask_rows(results["data_prep"], results["train_throughput"])
    rows += [preset_row(results["train_throughput_presets"])]
    rows += [startup_row(results["cli_startup"])]
    return table(["target (issue)", "measured"], rows)


# ----------------------------------------------------------------------------- scale
def scale_targets(results: dict[str, dict]) -> str:
    """Step time, parameters and peak RSS per number of targets."""
    rows = [
        [
            f"{r['n_targets']:,}",
            f"{r['ms_per_step']:.1f}",
            f"{r['parameters']:,}",
            f"{r['peak_rss_mib']:.0f} MiB",
        ]
        for r in results["scale_targets"]["results"]["runs"]
    ]
    return table(["P (targets)", "ms per step", "parameters", "peak RSS"], rows)


def scale_backed(results: dict[str, dict]) -> str:
    """Training from a backed file: file size, peak RSS and step time per number of cells."""
    rows = []
    for r in results["scale_backed"]["results"]["runs"]:
        if "ms_per_step" not in r:
            continue  # the run that wrote the file
        dense_gib = r["n_cells"] * r["n_genes"] * 4 / 2**30
        rows.append(
            [
                f"{r['n_cells']:,} x {r['n_genes']:,}",
                f"{r['file_gib']:.1f} GiB",
                f"{r['peak_rss_mib']:,.0f} MiB",
                f"{r['ms_per_step']:.1f}",
                f"{dense_gib:.2g} GiB",
            ]
        )
    header = ["cells x genes", "file", "training peak RSS", "ms per step (setup included)"]
    return table([*header, "dense X would be"], rows)


# ----------------------------------------------------------------------------- outputs
def printed(name: str) -> Callable[[dict[str, dict]], str]:
    """The printed lines of the run ``name`` as a code block."""
    return lambda results: output_block(results[name]["output"])


def preset_steps_excerpt(results: dict[str, dict]) -> str:
    """The presets run's step tables: one header, the two presets' rows and their ratio."""
    lines = results["train_throughput_presets"]["output"]
    rows = re.compile(r"^\s*\d+ (scsena|default)\s|^batch \d+: default / preset=")
    header = next(line for line in lines if line.startswith("batch path"))
    return output_block([header] + [line for line in lines if rows.match(line)])


def member_weights_excerpt(results: dict[str, dict]) -> str:
    """Step table of the default with non-negative and with free member weights."""
    lines = results["train_throughput_member_weights"]["output"]
    rows = re.compile(r"^\s*\d+ (default|free)\s|^batch \d+: default / member_weights=")
    header = next(line for line in lines if line.startswith("batch path"))
    return output_block([header] + [line for line in lines if rows.match(line)])


READOUT_COLUMNS = [
    ("sign_one_way", "sign of significant rows whose moving members go one way"),
    ("sign_all_members", "the same, counting every member (no 0.1 threshold)"),
    ("top_k_recall", "true program in the top 5"),
    ("top_k_direction", "... with the true direction"),
    ("truth_sign", "significant rows with the true sign"),
    ("null_quiet", "null targets with no call beyond their own gene's terms"),
    ("identical_max_diff", "largest effect gap between identical-member terms"),
]


#: How the methods of the readouts run are shown.
READOUT_LABELS = {
    "scsena preset='scsena'": "model, default preset",
    "scsena preset='reference'": 'model, `preset="reference"`',
    "mean": "mean of member genes",
    "ulm": "decoupler ULM",
}


def readouts_table(results: dict[str, dict]) -> str:
    """Readouts against the knock-out simulator's truth: model and model-free, per seed."""
    scores = results["readouts"]["results"]["scores"]
    by_method: dict[str, list[dict]] = {}
    for row in scores:
        by_method.setdefault(row["method"], []).append(row)
    rows = []
    for method, runs in by_method.items():
        cells = []
        for key, _ in READOUT_COLUMNS:
            values = [r[key] for r in runs]
            mean = sum(values) / len(values)
            text = f"{mean:.3f}" if len(values) == 1 else f"{mean:.3f} (min {min(values):.3f})"
            cells.append(text)
        seeds = "model-free: one data set" if len(runs) == 1 else f"{len(runs)} seeds"
        rows.append([f"{READOUT_LABELS.get(method, method)} ({seeds})", *cells])
    return table(["method", *[label for _, label in READOUT_COLUMNS]], rows)


def readouts_consensus(results: dict[str, dict]) -> str:
    """Agreement over seeds of each preset's calls."""
    res = results["readouts"]["results"]["consensus"]
    rows = [
        [
            preset,
            str(c["significant_in_all"]),
            f"{c['same_direction_in_all']:.1%}",
            str(c["top5_calls"]),
            f"{c['top5_in_all']:.1%}",
        ]
        for preset, c in res.items()
    ]
    header = ["preset", "calls significant in every seed", "... same direction in every seed"]
    header += ["(perturbation, term) in some seed's top 5", "... in every seed's top 5"]
    return table(header, rows)


def predictions_table(results: dict[str, dict]) -> str:
    """Per seed and variant: seen targets near their mean baseline, null targets near
    control (energy and L2), unseen doubles better than control (low data) or additive
    (saturating)."""
    res = results["predictions"]["results"]
    rows = []
    for seed in sorted(res["low_data"], key=int):
        for variant in ("default", "network alone", "shrinkage 0", "shrinkage 4"):
            cells = []
            e40 = res["knockout_40"][seed]["variants"][variant]["energy"]
            worst = (max(e40["effect_ratio_to_mean"]), max(e40["null_ratio_to_control"]))
            for key in ("knockout_40", "knockout_100"):
                counts = res[key][seed]["variants"][variant]
                for part, n in (("effect_within_5pct_of_mean", "n_effect"),):
                    e, l2 = counts["energy"], counts["l2_top1000"]
                    cells.append(f"{e[part]}/{e[n]}, {l2[part]}/{l2[n]}")
                e, l2 = counts["energy"], counts["l2_top1000"]
                cells.append(
                    f"{e['null_within_5pct_of_control']}/{e['n_null']}, "
                    f"{l2['null_within_5pct_of_control']}/{l2['n_null']}"
                )
            if variant in ("default", "network alone"):
                low = res["low_data"][seed]
                sat = res["saturating"][seed]
                if variant != "default":
                    low, sat = low[variant], sat[variant]
                cells.append(
                    ", ".join(f"{low[m]['model_better']}/{low[m]['n']}" for m in METRIC_ORDER)
                )
                cells.append(
                    ", ".join(f"{sat[m]['model_better']}/{sat[m]['n']}" for m in METRIC_ORDER)
                )
                cells.append(f"{sat['energy']['model']:.3f} vs {sat['energy']['additive']:.3f}")
                if variant == "default":
                    sh = res["saturating"][seed]["shrunk_additive"]
                    cells.append(
                        f"{sh['model']['l2']:.2f} vs {sh['shrunk additive']['l2']:.2f} "
                        f"({sh['model_better_than_shrunk_l2']}/{sh['n']})"
                    )
                else:
                    cells.append("–")
            else:
                cells += ["–", "–", "–", "–"]
            rows.append([seed, variant, *cells[:4], f"{worst[0]:.3f}, {worst[1]:.3f}", *cells[4:]])
    header = ["seed", "model", "knock-out, 40 epochs: effect targets <= 1.05x mean (energy, L2)"]
    header += ["null targets <= 1.05x control", "100 epochs: effect <= 1.05x mean"]
    header += [
        "null <= 1.05x control",
        "40 epochs, worst energy ratio (effect / mean, null / control)",
    ]
    header += ["low data: doubles better than control (MMD, energy, L2)"]
    header += ["saturating: doubles better than additive (MMD, energy, L2)"]
    header += ["saturating: energy, model vs additive"]
    header += ["saturating: L2 of means, model vs shrunk additive (doubles where model better)"]
    return table(header, rows)


METRIC_ORDER = ("mmd", "energy", "l2_top1000")

#: cell-eval's metrics and scsena's, as shown in results.md: (key, column title).
CELL_EVAL_COLUMNS = (
    ("overlap_at_N", "cell-eval: DE overlap"),
    ("precision_at_N", "cell-eval: DE precision"),
    ("de_nsig_counts_pred", "cell-eval: DE genes called"),
    ("pearson_delta", "cell-eval: Pearson delta"),
    ("mse", "cell-eval: MSE"),
    ("discrimination_score_l1", "cell-eval: discrimination (L1)"),
    ("pearson_edistance", "cell-eval: Pearson of energy distance"),
    ("energy", "scsena: energy"),
    ("l2_top1000", "scsena: L2 of means"),
    ("mmd", "scsena: MMD"),
    ("pearson_delta_de", "scsena: delta-Pearson (top-20 DEGs)"),
)


def cell_eval_table(results: dict[str, dict]) -> str:
    """Unseen doubles: cell-eval's metrics beside scsena's, mean ± sd over seeds."""
    res = results["cell_eval"]["results"]
    rows = []
    for method in ("scsena", "reference", "additive", "control"):
        cells = []
        for key, _ in CELL_EVAL_COLUMNS:
            vals = [res[s][method][key] for s in res if key in res[s][method]]
            sd = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
            cells.append(f"{np.mean(vals):.3f} ± {sd:.3f}" if vals else "–")
        rows.append([method, *cells])
    return table(["method", *(title for _, title in CELL_EVAL_COLUMNS)], rows)


def batch_covariates(results: dict[str, dict]) -> str:
    """Per-batch L2 error on unseen doubles without and with ``batch_key``; paired by seed."""
    res = results["batch_covariates"]["results"]
    l2, paired = res["l2_mean"], res["batch_key_minus_none"]
    methods = ["control baseline", "additive baseline", "scsena, no batch_key"]
    methods.append("scsena, batch_key")
    effects = sorted({key.split("|")[0] for key in l2}, key=float)
    rows = []
    for effect in effects:
        cells = [l2[f"{effect}|{m}"] for m in methods]
        seeds = sorted((k for k in paired if k.startswith(f"{effect}|")), key=lambda k: int(k[-1]))
        diffs = ", ".join(f"{paired[k]:+.3f}" for k in seeds)
        rows.append([effect, *(f"{c['mean']:.3f} ± {c['std']:.3f}" for c in cells), diffs])
    header = ["batch effect (sd of log-scale gene shifts)", "control", "additive"]
    header += ["scsena, no `batch_key`", "scsena, `batch_key`", "`batch_key` minus none, per seed"]
    return table(header, rows)


#: Generated parts of each page, by marker name.
PAGES: dict[str, dict[str, Callable[[dict[str, dict]], str]]] = {}
SECTIONS: dict[str, Callable[[dict[str, dict]], str]] = {
    "summary": summary,
    "train-throughput-output": printed("train_throughput"),
    "train-throughput-presets-output": preset_steps_excerpt,
    "full-training-gpu-batch128-output": printed("full_training_gpu_batch128"),
    "full-training-gpu-batch32-output": printed("full_training_gpu_batch32"),
    "full-training-cpu-output": printed("full_training_cpu"),
    "predict-throughput-output": printed("predict_throughput"),
    "data-prep-output": printed("data_prep"),
    "scale-targets": scale_targets,
    "scale-backed-output": printed("scale_backed"),
    "scale-backed": scale_backed,
    "cli-startup-output": printed("cli_startup"),
    "threads-output": printed("threads"),
    "member-weights-steps": member_weights_excerpt,
}
PAGES["benchmarks.md"] = SECTIONS
PAGES["results.md"] = {
    "batch-covariates": batch_covariates,
    "readouts": readouts_table,
    "readouts-consensus": readouts_consensus,
    "readouts-output": printed("readouts"),
    "predictions": predictions_table,
    "cell-eval": cell_eval_table,
}


def render(page: str, results: dict[str, dict], sections: dict | None = None) -> str:
    """``page`` with every generated part (of ``sections``) rewritten from ``results``."""
    sections = SECTIONS if sections is None else sections
    found = set()

    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in sections:
            raise ValueError(f"unknown generated part {name!r}; known: {sorted(sections)}")
        found.add(name)
        return f"{match[1]}\n{sections[name](results)}\n\n{match[4]}"

    out = _SECTION.sub(replace, page)
    missing = sorted(set(sections) - found)
    if missing:
        raise ValueError(f"the page has no markers for {missing}: add {BEGIN} / {END} lines")
    return out


def main(argv: list[str] | None = None) -> int:
    """Rewrite the page (or, with ``--check``, report whether it is up to date)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--page", type=Path, default=None, help="the page to rewrite")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="recorded runs")
    parser.add_argument("--check", action="store_true", help="exit 1 if a page is stale")
    args = parser.parse_args(argv)
    pages = [args.page] if args.page is not None else [DOCS / name for name in PAGES]
    results = read_results(args.results)
    stale = 0
    for path in pages:
        text = path.read_text()
        new = render(text, results, PAGES.get(path.name, SECTIONS))
        if new == text:
            continue
        if args.check:
            print(f"{path} differs from {args.results}: run python benchmarks/render.py")
            stale = 1
        else:
            path.write_text(new)
            print(f"[wrote] {path}")
    return stale


if __name__ == "__main__":
    sys.exit(main())
