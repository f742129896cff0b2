"""Crafted model files are refused with one ValueError, before anything large is allocated.

Each test name below is referenced from docs/reliability.md.
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import scsena

TAG = "__scsena_type__"


def _craft(payload: dict, case: str) -> None:
    """Change a valid ``model.pt`` payload as a hostile sender would."""
    state, attrs = payload["model_state_dict"], payload["attr_dict"]
    params = attrs["init_params_"]["non_kwargs"]
    if case == "huge_string_dtype":  # a 155 kB file asking for 18 GiB
        attrs["evil_"] = {TAG: "ndarray", "dtype": "|S2000000000", "shape": [9], "data": ["a"] * 9}
    elif case == "shape_beyond_data":
        attrs["evil_"] = {TAG: "ndarray", "dtype": "<f8", "shape": [10**12], "data": [1.0]}
    elif case == "unknown_dtype":
        attrs["evil_"] = {TAG: "ndarray", "dtype": "not-a-dtype", "shape": [1], "data": [1]}
    elif case == "huge_n_latent":
        params["n_latent"] = 60000
    elif case == "huge_n_hidden":
        params["n_hidden"] = 10**9
    elif case == "bad_tensor_dtype":
        state["d2.bias"] = state["d2.bias"].to(torch.complex64)
    elif case == "missing_weights":
        del state["d2.bias"]
    elif case == "wrong_shape":
        state["d2.weight"] = state["d2.weight"][:-1]
    elif case == "nan_weights":
        state["d2.bias"][0] = float("nan")
    elif case == "gene_index_out_of_range":
        state["fc1.gene_index"][0] = 10**6
    else:
        raise AssertionError(case)


CASES = [
    "huge_string_dtype",
    "shape_beyond_data",
    "unknown_dtype",
    "huge_n_latent",
    "huge_n_hidden",
    "bad_tensor_dtype",
    "missing_weights",
    "wrong_shape",
    "nan_weights",
    "gene_index_out_of_range",
    "fifo",
    "dev_zero",
]

#: Loads every crafted directory under a 6 GiB address-space limit; prints one line each.
SCRIPT = textwrap.dedent(
    """
    import resource, sys, warnings
    resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))
    warnings.simplefilter("ignore")
    import anndata as ad, scsena
    adata = ad.read_h5ad(sys.argv[1])
    scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids")
    for path in sys.argv[2:]:
        try:
            scsena.SENAVAE.load(path, adata=adata)
            print(path, "LOADED")
        except ValueError as err:
            print(path, "ValueError", str(err).splitlines()[0])
        except BaseException as err:
            print(path, type(err).__name__, str(err)[:200])
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and FIFOs as on Linux")
def test_crafted_model_files_are_refused_with_one_value_error(tmp_path):
    adata = scsena.datasets.simulate_perturbseq(
        n_cells=300, n_genes=100, n_targets=3, n_doubles=1, seed=0
    )
    adata.write_h5ad(tmp_path / "data.h5ad")
    scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids")
    model = scsena.SENAVAE(adata, seed=0)
    model.save(tmp_path / "good")
    dirs = []
    for case in CASES:
        d = tmp_path / case
        model.save(d)
        pt = d / "model.pt"
        if case == "fifo":
            pt.unlink()
            os.mkfifo(pt)
        elif case == "dev_zero":
            pt.unlink()
            pt.symlink_to("/dev/zero")
        else:
            payload = torch.load(pt, weights_only=True)
            _craft(payload, case)
            torch.save(payload, pt)
        dirs.append(str(d))
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "data.h5ad"), str(tmp_path / "good"), *dirs],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert lines[str(tmp_path / "good")] == "LOADED", out.stderr[-2000:]
    for d in dirs:
        assert lines.get(d, "").startswith("ValueError"), (d, lines.get(d), out.stderr[-2000:])
        assert "not a valid scsena model file" in lines[d], (d, lines[d])
