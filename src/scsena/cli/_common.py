"""Shared pieces of the command line: data loading and setup, run directories, options."""

from __future__ import annotations

import argparse
import logging
import os
import warnings

_CONFIG_DATA_KEYS = (
    "data",
    "dataset",
    "sim_cells",
    "sim_genes",
    "sim_targets",
    "sim_doubles",
    "sim_seed",
    "perturbation_key",
    "control_value",
    "delimiter",
    "layer",
    "normalize",
    "allow_large_values",
    "gene_sets",
    "min_genes",
    "keep_terms",
    "batch_key",
    "covariate_keys",
)


def _quiet() -> None:
    """Silence third-party warnings and logs; scsena's own warnings stay visible."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(?!scsena(\.|$))")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)


def heldout_option(values: list[str] | None) -> str | int | list[str]:
    """The ``heldout`` argument of :class:`~scsena.SENAVAE` from ``--heldout`` values.

    Parameters
    ----------
    values
        The words given to ``--heldout`` (``None`` when it was not given).

    Returns
    -------
    ``"auto"`` when nothing is given; ``"auto"``/``"all"`` or a number as such; else the
    list of target names.
    """
    if not values:
        return "auto"
    if len(values) == 1 and values[0] in ("auto", "all"):
        return values[0]
    if len(values) == 1 and values[0].isdigit():
        return int(values[0])
    return list(values)


#: Python argument names in scsena's messages and the command-line option to give instead.
_CLI_NAMES = {
    "perturbation_key": "--perturbation-key",
    "control_value": "--control-value",
    "delimiter": "--delimiter",
    "layer": "--layer",
    "gene_sets": "--gene-sets",
    "min_genes": "--min-genes",
    "keep_terms": "--keep-terms",
    "batch_key": "--batch-key",
    "allow_large_values=True": "--normalize (or --allow-large-values)",
}


def cli_message(err: BaseException) -> str:
    """One line for an error, naming command-line options instead of Python arguments."""
    import re

    raw = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    text = " ".join(str(raw).split()) or type(err).__name__
    for name, option in _CLI_NAMES.items():
        if "=" in name:
            text = text.replace(f"`{name}`", option).replace(name, option)
            continue
        # `name='x'` -> --name 'x'; a bare `name` -> --name (not inside adata.obs[...])
        word = r"(?<![-\w])" + re.escape(name) + r"\b"
        text = re.sub(r"`" + word + r"=([^`]+)`", option + r" \1", text)
        text = re.sub(word + r"=(\S+?)([,.;)]?(?:\s|$))", option + r" \1\2", text)
        text = re.sub(r"`?" + word + r"`?(?!\])", option, text)
    return text


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _int_at_least(minimum: int):
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {minimum}, got {text!r}"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)


def _load_data(args: argparse.Namespace):
    """The AnnData named by ``--data`` (a path, or ``simulate``), in the canonical schema."""
    import anndata as ad

    import scsena

    if args.data == "simulate":
        return scsena.datasets.simulate_perturbseq(
            n_cells=args.sim_cells,
            n_genes=args.sim_genes,
            n_targets=args.sim_targets,
            n_doubles=args.sim_doubles,
            seed=args.sim_seed,
        )
    readers = {
        "norman2019": scsena.datasets.norman2019,
        "wessel2023": scsena.datasets.wessel2023_hek293,
    }
    if args.dataset not in readers and not os.path.exists(args.data):
        raise SystemExit(
            f"error: --data {args.data!r} does not exist (a .h5ad path or 'simulate')."
        )
    try:
        return readers.get(args.dataset, ad.read_h5ad)(args.data)
    except Exception as err:  # noqa: BLE001 - any unreadable input: one line, no traceback
        raise SystemExit(
            f"error: --data {args.data!r} could not be read as {args.dataset} data "
            f"({_one_line(err)})."
        ) from None


def _normalize(adata, args: argparse.Namespace) -> argparse.Namespace:
    """``--normalize``: counts (X or ``--layer``) to log1p of 10,000 per cell, into X."""
    if not getattr(args, "normalize", False):
        return args
    import scanpy as sc

    if args.layer is not None:
        adata.X = adata.layers[args.layer].copy()
        args = argparse.Namespace(**{**vars(args), "layer": None})
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    return args


def _setup(adata, args: argparse.Namespace) -> None:
    import scsena

    args = _normalize(adata, args)
    scsena.SENAVAE.setup_anndata(
        adata,
        allow_large_values=bool(getattr(args, "allow_large_values", False)),
        perturbation_key=args.perturbation_key,
        control_value=args.control_value,
        delimiter=args.delimiter,
        layer=args.layer,
        gene_sets=args.gene_sets,
        min_genes=args.min_genes,
        keep_terms=getattr(args, "keep_terms", None) or None,
        batch_key=getattr(args, "batch_key", None),
        categorical_covariate_keys=getattr(args, "covariate_keys", None) or None,
    )


def _train_options() -> dict[str, argparse.Action]:
    """The options of ``scsena train`` by destination (all keys its config.json may hold)."""
    from scsena.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in sub.choices["train"]._actions if a.dest != "help"}


def _config_value_ok(value, action: argparse.Action) -> bool:
    if value is None:
        return action.default is None and not action.required
    if isinstance(action, (argparse._StoreTrueAction, argparse.BooleanOptionalAction)):
        return isinstance(value, bool)
    if action.nargs in ("*", "+"):
        return isinstance(value, list) and all(_config_scalar_ok(v, action) for v in value)
    return _config_scalar_ok(value, action)


def _config_scalar_ok(value, action: argparse.Action) -> bool:
    kind = action.type or str
    python_type = {str: str, int: int, _positive_int: int, float: (int, float)}.get(
        kind, (str, int, float)
    )
    if isinstance(value, bool) or not isinstance(value, python_type):
        return False
    if action.choices is not None and value not in action.choices:
        return False
    try:
        kind(str(value))
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        return False
    return True


def _read_config(model_dir: str) -> dict:
    """A run's config.json: only ``scsena train`` options, each of its type."""
    import json

    path = os.path.join(model_dir, "config.json")
    try:
        with open(path) as fh:
            config = json.load(fh)
    except (OSError, ValueError) as err:
        raise SystemExit(
            f"error: cannot read {path!r} ({_one_line(err)}); it is written by `scsena train`."
        ) from None
    if not isinstance(config, dict):
        raise SystemExit(f"error: {path!r} is not a `scsena train` config (not a JSON object).")
    options = _train_options()
    unknown = sorted(set(config) - set(options) - {"command"})
    if unknown:
        raise SystemExit(
            f"error: {path!r} holds unknown option(s) {unknown}; it was not written by "
            "`scsena train` of this version. Remove them, or pass the data options "
            "(--data ...) directly."
        )
    bad = sorted(k for k in options if k in config and not _config_value_ok(config[k], options[k]))
    if bad:
        shown = ", ".join(f"{k}={config[k]!r}" for k in bad)
        raise SystemExit(f"error: {path!r} holds values of the wrong type or range: {shown}.")
    return config


def _run_dirs(model_dir: str) -> list[tuple[int, str]]:
    """The seeds of a run, each finished; an interrupted seed is refused with the fix."""
    import re
    import shlex

    from ._train import read_status

    try:
        names = sorted(os.listdir(model_dir))
    except OSError as err:
        raise SystemExit(f"error: --model-dir {model_dir!r}: {_one_line(err)}") from None
    runs = []
    for name in names:
        m = re.fullmatch(r"seed(\d+)", name)
        d = os.path.join(model_dir, name)
        if m and os.path.isdir(os.path.join(d, "model")):
            runs.append((int(m.group(1)), d))
    if not runs:
        raise SystemExit(
            f"error: no trained runs (seed*/model) in {model_dir!r}; run `scsena train`."
        )
    for seed, d in runs:
        status = read_status(d)
        if status.get("status") == "interrupted":
            raise SystemExit(
                f"error: seed {seed} of {model_dir!r} was interrupted after "
                f"{status.get('epochs_done')} of {status.get('max_epochs')} epochs; finish it "
                f"with `scsena train --save-dir {shlex.quote(model_dir)} --resume`."
            )
    return sorted(runs)


def _load_run(args: argparse.Namespace, run_dir: str):
    import pandas as pd

    import scsena

    config = _read_config(args.model_dir)
    for key in _CONFIG_DATA_KEYS:
        if getattr(args, key, None) is None and key in config:
            setattr(args, key, config[key])
    if args.data is None:
        raise SystemExit(
            f"error: the config.json of {args.model_dir!r} names no data; pass --data."
        )
    adata = _load_data(args)
    _normalize(adata, args)
    try:
        model = scsena.SENAVAE.load(
            os.path.join(run_dir, "model"), adata=adata, trusted=args.trusted
        )
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"error: {' '.join(str(err).split())}") from None
    path = os.path.join(run_dir, "folds.tsv")
    try:
        folds = pd.read_csv(path, sep="\t", index_col=0)["scsena_fold"]
    except (OSError, ValueError, KeyError) as err:
        raise SystemExit(
            f"error: cannot read the folds of {run_dir!r} ({path}: {_one_line(err)}); it is "
            "written by `scsena train`: train that seed again."
        ) from None
    adata.obs["scsena_fold"] = pd.Categorical(
        folds.reindex(adata.obs_names).to_numpy(),
        categories=adata.obs["scsena_fold"].cat.categories,
    )
    return model, adata


def _out_dir(args: argparse.Namespace) -> str:
    """``--out``: the directory a command writes into (default ``--model-dir``).

    Every ``scsena`` command takes ``--out`` as a directory; ``evaluate`` and
    ``activity`` write there with the layout of the run (``seedN/...``).
    """
    out = args.out or args.model_dir
    if out.endswith((".h5ad", ".tsv")):
        raise SystemExit(
            f"error: --out {out!r} looks like a file name; --out is a directory in every "
            f"scsena command (files go to DIR/seedN/...). Pass e.g. --out {out.rsplit('.', 1)[0]}."
        )
    if os.path.exists(out) and not os.path.isdir(out):
        raise SystemExit(
            f"error: --out {out!r} is an existing file; --out is a directory (files go to "
            "DIR/seedN/...). Pass a directory name."
        )
    return out


def _wrote(*paths: str) -> None:
    """Say which files a command wrote."""
    for path in paths:
        print(f"[wrote] {path}")


def _data_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    """Data options; for commands reading a trained run, defaults come from its config."""

    def d(value):
        return value if required else None

    p.add_argument(
        "--data",
        required=required,
        default=None,
        help="A .h5ad path, or 'simulate' for the built-in simulator"
        + ("" if required else " (default: as in training)")
        + ".",
    )
    p.add_argument(
        "--dataset",
        choices=["h5ad", "norman2019", "wessel2023"],
        default=d("h5ad"),
        help="Reader for --data (norman2019: CPA or pertpy layout).",
    )
    same = "" if required else " (default: as in training)"
    p.add_argument("--sim-cells", type=int, default=d(3000), help="Simulated cells" + same)
    p.add_argument("--sim-genes", type=int, default=d(1000), help="Simulated genes" + same)
    p.add_argument("--sim-targets", type=int, default=d(20), help="Simulated single targets" + same)
    p.add_argument(
        "--sim-doubles", type=int, default=d(10), help="Simulated double perturbations" + same
    )
    p.add_argument("--sim-seed", type=int, default=d(0), help="Seed of the simulation" + same)


def _trusted_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trusted",
        action="store_true",
        help="Also load model files of older scsena versions. Their loading can run code "
        "stored in the file: use only for runs from a trusted source.",
    )


def _threads_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="CPU threads of torch (sets scvi.settings.num_threads; default: torch's choice, "
        "usually all cores). 1 is often fastest on a busy or small machine.",
    )


def _use_threads(args: argparse.Namespace) -> None:
    """Apply ``--threads`` through scvi-tools' setting, which training honours."""
    if getattr(args, "threads", None) is not None:
        import scvi

        scvi.settings.num_threads = args.threads


#: Defaults not shown in help: nothing to say (``None``, an off switch) or hidden.
_NO_DEFAULT = (None, False, argparse.SUPPRESS)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help with each option's default, unless it is ``None``/``False`` or already stated."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        stated = "(default" in text or "default:" in text
        if stated or not action.option_strings or any(default is v for v in _NO_DEFAULT):
            return text
        return f"{text} (default: {'%(default)r' if isinstance(default, str) else '%(default)s'})"


_OUT_HELP = (
    "Directory to write into (every scsena command: train's run directory; evaluate and "
    "activity write seedN/... there)"
)


def _preset(name: str) -> str:
    """``(default: the preset's, V)`` or ``(default: the preset's: scsena V1, reference V2)``."""
    from scsena._presets import MODULE_PRESETS, TRAIN_PRESETS

    table = TRAIN_PRESETS if name in TRAIN_PRESETS["scsena"] else MODULE_PRESETS
    values = {p: table[p][name] for p in ("scsena", "reference")}
    if values["scsena"] == values["reference"]:
        return f"(default: the preset's, {values['scsena']:g})"
    return f"(default: the preset's: scsena {values['scsena']}, reference {values['reference']})"
