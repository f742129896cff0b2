"""Unit tests of the network pieces against explicit reference forms."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from scsena.module import (
    CausalLayer,
    MaskedLinear,
    SENAModule,
    dag_l1,
    kl_divergence,
    mmd,
    mmd_bandwidths,
)
from scsena.train import PerturbationPureBatchSampler, Schedules


def _membership(n_genes=12, n_terms=5, seed=0):
    rng = np.random.default_rng(seed)
    m = (rng.random((n_genes, n_terms)) < 0.4).astype(np.float32)
    m[0, :] = 1  # gene 0 in every set, gene 1 in none
    m[1, :] = 0
    return sp.csr_matrix(m)


def test_masked_layer_zeroes_non_members_at_lambda_zero():
    member = _membership()
    torch.manual_seed(0)
    layer = MaskedLinear(member, lambda_=0.0)
    dense = torch.as_tensor(member.toarray().T)
    assert layer.weight.shape == (int(member.nnz),)  # only member pairs are stored
    w = layer.effective_weight().detach()
    assert torch.all(w[dense == 0] == 0)
    assert torch.all(w[dense == 1] != 0)
    x = torch.randn(4, 12)
    out = layer(x)
    torch.testing.assert_close(out, x @ w.T + layer.bias)
    # gene 1 is in no set: changing it cannot change any activity
    x2 = x.clone()
    x2[:, 1] += 10.0
    torch.testing.assert_close(layer(x2), out)


def test_member_only_layer_matches_reference_form():
    """Output and gradients equal the reference ``x (W * M)^T`` with a dense W."""
    member = sp.random(60, 25, density=0.1, random_state=3, format="csr")
    member.data[:] = 1
    torch.manual_seed(1)
    layer = MaskedLinear(member, lambda_=0.0).double()
    mask = torch.as_tensor(member.toarray().T, dtype=torch.float64)
    w_full = layer.effective_weight().detach().clone().requires_grad_(True)
    x = torch.randn(7, 60, dtype=torch.float64)
    target = torch.randn(7, 25, dtype=torch.float64)
    ref = x @ (w_full * mask).T + layer.bias.detach()
    (ref - target).square().sum().backward()
    out = layer(x)
    (out - target).square().sum().backward()
    torch.testing.assert_close(out, ref)
    rows, cols = layer.term_index, layer.gene_index
    torch.testing.assert_close(layer.weight.grad, w_full.grad[rows, cols])
    # the reference's non-member weights get exactly zero gradient: nothing is lost
    assert torch.all(w_full.grad[mask == 0] == 0)


def test_member_only_layer_chunks_large_batches_exactly():
    member = _membership()
    torch.manual_seed(0)
    layer = MaskedLinear(member, lambda_=0.0).double()
    x = torch.randn(50, 12, dtype=torch.float64)
    whole = layer(x)
    layer.max_gather_elements = 3 * layer.n_members  # 3 rows per chunk
    torch.testing.assert_close(layer(x), whole)


def test_masked_layer_same_seed_same_weights_whatever_the_storage():
    member = _membership()
    torch.manual_seed(5)
    sparse_layer = MaskedLinear(member, lambda_=0.0)
    torch.manual_seed(5)
    dense_layer = MaskedLinear(member, lambda_=0.5)
    mask = torch.as_tensor(member.toarray().T != 0)
    torch.testing.assert_close(
        sparse_layer.effective_weight(), torch.where(mask, dense_layer.weight, 0.0)
    )
    torch.testing.assert_close(sparse_layer.bias, dense_layer.bias)


def test_masked_layer_loads_a_dense_weight_state_dict():
    """State dicts with a dense ``(T, G)`` weight and ``member`` buffer still load."""
    member = _membership()
    torch.manual_seed(0)
    layer = MaskedLinear(member, lambda_=0.0)
    mask = torch.as_tensor(member.toarray().T != 0)
    old = {
        "weight": layer.effective_weight().detach() + 0.5 * mask,
        "bias": layer.bias.detach() + 1.0,
        "member": mask,
    }
    fresh = MaskedLinear(member, lambda_=0.0)
    fresh.load_state_dict(old)
    torch.testing.assert_close(fresh.effective_weight(), old["weight"] * mask)
    torch.testing.assert_close(fresh.bias, old["bias"])
    other = old | {"member": ~mask}
    with pytest.raises(RuntimeError, match="mask differs"):
        MaskedLinear(member, lambda_=0.0).load_state_dict(other)


def test_masked_layer_leaks_exactly_lambda():
    member = _membership()
    torch.manual_seed(0)
    layer = MaskedLinear(member, lambda_=0.25)
    dense = torch.as_tensor(member.toarray().T)
    mask = torch.where(dense == 1, torch.ones_like(dense), torch.full_like(dense, 0.25))
    x = torch.randn(3, 12)
    torch.testing.assert_close(layer.effective_weight(), layer.weight * mask)
    torch.testing.assert_close(layer(x), x @ (layer.weight * mask).T + layer.bias)
    # gene 1 (no set): a unit change moves each activity by exactly 0.25 * W[:, 1]
    x2 = x.clone()
    x2[:, 1] += 1.0
    torch.testing.assert_close(layer(x2) - layer(x), (0.25 * layer.weight[:, 1]).expand(3, -1))


def test_masked_layer_rejects_bad_lambda():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        MaskedLinear(_membership(), lambda_=1.5)


def test_masked_layer_init_matches_linear():
    torch.manual_seed(0)
    n_genes = 400
    layer = MaskedLinear(np.ones((n_genes, 30)), 0.0)
    assert layer.n_members == n_genes * 30
    bound = 1 / np.sqrt(n_genes)
    assert layer.weight.abs().max() <= bound + 1e-6
    assert layer.bias.abs().max() <= bound + 1e-6
    # Kaiming-uniform(a=sqrt(5)) is U(-1/sqrt(fan_in), 1/sqrt(fan_in)): variance bound^2 / 3
    assert layer.weight.var().item() == pytest.approx(bound**2 / 3, rel=0.05)


def test_causal_layer_equals_explicit_inverse():
    torch.manual_seed(0)
    layer = CausalLayer(7).double()
    z = torch.randn(5, 7, dtype=torch.float64)
    a = torch.triu(layer.G, 1)
    expected = z @ torch.linalg.inv(torch.eye(7, dtype=torch.float64) - a)
    torch.testing.assert_close(layer(z), expected)


def _naive_mmd(x, y, sigma=200.0):
    bws = [sigma / 2**5 * 2**i for i in range(10)]

    def k(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)  # B x B x G expansion
        return sum(torch.exp(-d2 / bw) for bw in bws)

    return (k(x, x) + k(y, y) - k(x, y) - k(y, x)).mean()


@pytest.mark.parametrize("sigma", [200.0, 1000.0])
def test_mmd_equals_naive_reference(sigma):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(9, 30, generator=g, dtype=torch.float64) * 3
    y = torch.randn(9, 30, generator=g, dtype=torch.float64) * 3 + 1
    torch.testing.assert_close(mmd(x, y, sigma=sigma), _naive_mmd(x, y, sigma))
    assert mmd(x, x, sigma=sigma).abs() < 1e-10


def test_mmd_bandwidths_reference():
    assert mmd_bandwidths(200.0) == [6.25 * 2**i for i in range(10)]


def test_kl_and_l1_formulas():
    mu = torch.tensor([[0.5, -1.0], [0.0, 2.0]])
    var = torch.tensor([[1.0, 0.5], [2.0, 1.0]])
    per = 1 + torch.log(var) - mu**2 - var
    assert kl_divergence(mu, var).item() == pytest.approx((-0.5 * per.mean() / 2).item())
    assert kl_divergence(mu, var, reference_scaling=False).item() == pytest.approx(
        (-0.5 * per.mean()).item()
    )
    g = torch.tensor([[9.0, 1.0, -2.0], [5.0, 9.0, 3.0], [7.0, 7.0, 9.0]])
    assert dag_l1(g).item() == pytest.approx((1 + 2 + 3) / 3)


def test_schedules_match_spec_values():
    s = Schedules(100, alpha_max=1.0, beta_max=1.0, tau_max=100.0)
    beta, alpha, tau = s.beta(), s.alpha(), s.tau()
    assert np.all(beta[:10] == 0) and beta[10] == 0 and beta[99] == pytest.approx(1)
    assert beta[54] == pytest.approx(44 / 89)
    assert np.all(alpha[:5] == 0) and alpha[5] == 0
    assert alpha[27] == pytest.approx(22 / 44) and alpha[49] == pytest.approx(1)
    assert np.all(alpha[50:] == 1)
    assert np.all(tau[:5] == 1) and tau[5] == 1 and tau[99] == pytest.approx(100)
    assert tau[52] == pytest.approx(1 + 99 * 47 / 94)
    assert s.at(27) == pytest.approx((0.5, beta[27], tau[27]))
    d = Schedules(100, alpha_max=10, beta_max=2, tau_max=5)
    assert d.alpha()[99] == 10 and d.beta()[99] == 2 and d.tau()[99] == 5


def test_sampler_batches_are_perturbation_pure():
    groups = np.repeat([0, 1, 2, 3], [70, 33, 10, 64])
    sampler = PerturbationPureBatchSampler(groups, batch_size=32, seed=3)
    batches = list(sampler)
    # 70 -> 2, 33 -> 1, 10 -> 0, 64 -> 2 full chunks; incomplete chunks dropped
    assert len(batches) == len(sampler) == 5
    for b in batches:
        assert len(b) == 32
        assert len(set(groups[b])) == 1
    flat = np.concatenate(batches)
    assert len(set(flat)) == len(flat)
    again = PerturbationPureBatchSampler(groups, batch_size=32, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(batches, list(again)))
    # the next epoch reshuffles
    assert not all(np.array_equal(a, b) for a, b in zip(batches, list(sampler)))
    keep = PerturbationPureBatchSampler(groups, 32, shuffle=False, drop_last=False)
    assert sum(len(b) for b in keep) == len(groups) and len(keep) == 8


def test_module_shapes_and_gradients():
    torch.manual_seed(0)
    member = _membership(12, 5)
    module = SENAModule(12, n_targets=4, membership=member, n_latent=3)
    tensors = {
        "x": torch.rand(6, 12),
        "y": torch.rand(6, 12),
        "codes": torch.tensor([[0, -1]] * 3 + [[1, 3]] * 3),
    }
    inf, gen, loss = module(tensors, loss_kwargs={"alpha": 1.0, "beta": 1.0})
    assert inf["activity"].shape == (6, 5) and inf["z"].shape == (6, 3)
    assert gen["y_hat"].shape == (6, 12) and gen["x_hat"].shape == (6, 12)
    assert gen["bc"].shape == (6, 2, 3)
    assert set(loss.extra_metrics) == {"mmd", "mse", "kl", "l1"}
    loss.loss.backward()
    for name, p in module.named_parameters():
        assert p.grad is not None, name
        if name != "intervention.c1.weight":
            assert p.grad.abs().sum() > 0, name
    # c1 columns of targets not in the batch (index 2) get no gradient
    assert module.intervention.c1.weight.grad[:, 2].abs().sum() == 0


def test_intervention_equals_one_hot_reference():
    torch.manual_seed(0)
    module = SENAModule(12, n_targets=4, membership=_membership(12, 5), n_latent=3)
    z = torch.randn(2, 3)
    codes = torch.tensor([[2, -1], [0, 3]])
    z_int, _ = module.intervene(z, codes, temperature=5.0)
    enc = module.intervention

    def one_hot_bc(i):
        c = torch.nn.functional.one_hot(torch.tensor([i]), 4).float()
        h = torch.nn.functional.leaky_relu(enc.c1(c), 0.2)
        return torch.softmax(5.0 * enc.c2(h), -1)[0], (c @ enc.shift)[0]

    b2, s2 = one_hot_bc(2)
    b0, s0 = one_hot_bc(0)
    b3, s3 = one_hot_bc(3)
    torch.testing.assert_close(z_int[0], z[0] + b2 * s2)
    torch.testing.assert_close(z_int[1], z[1] + b0 * s0 + b3 * s3)


def test_original_encoder_is_dense():
    module = SENAModule(12, 4, _membership(12, 5), 3, encoder="original")
    assert isinstance(module.fc1, torch.nn.Linear)
    assert module.fc1.weight.shape == (5, 12)
    assert module.fc1.weight.std().item() == pytest.approx(0.02, rel=0.5)
    with pytest.raises(ValueError, match="encoder"):
        SENAModule(12, 4, _membership(12, 5), 3, encoder="dense")
