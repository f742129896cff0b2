"""Data-parallel training through Lightning's DDP strategy (2 CPU processes, gloo)."""

import sys

import pytest
import torch

import scsena
from conftest import TRAIN_KW


@pytest.mark.skipif(sys.platform != "linux", reason="gloo process groups tested on Linux")
def test_ddp_two_processes_equal_single_process_same_global_batch(sim_adata):
    adata = sim_adata[sim_adata.obs["perturbation_type"] != "double"].copy()
    scsena.SENAVAE.setup_anndata(adata, perturbation_key="guide_ids")
    kw = dict(TRAIN_KW, max_epochs=1, batch_size=16, select_best_epoch=False)
    steps = 4
    # two workers, each 16 cells a step: global batch of two perturbation-pure chunks
    ddp = scsena.SENAVAE(adata, seed=5)
    ddp.train(**kw, accelerator="cpu", devices=2, strategy="ddp_spawn", limit_train_batches=steps)
    # one process, the same two chunks a step (gradients averaged by accumulation)
    single = scsena.SENAVAE(adata, seed=5)
    single.train(
        **kw, accelerator="cpu", devices=1, accumulate_grad_batches=2, limit_train_batches=2 * steps
    )
    untrained = scsena.SENAVAE(adata, seed=5).module.state_dict()
    moved = False
    for k, v in single.module.state_dict().items():
        if v.dtype == torch.bool:
            continue
        torch.testing.assert_close(ddp.module.state_dict()[k], v, rtol=1e-5, atol=1e-6)
        moved |= not torch.equal(v, untrained[k])
    assert moved
