"""The non-negative weighted-mean gene-set layer: directions by construction, tied twins."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from scsena.module import MaskedLinear, MemberMeanLayer, SENAModule


def _membership_with_twins():
    """8 genes x 5 terms; terms 1 and 3 have identical members, term 4 has one gene."""
    m = np.zeros((8, 5), dtype=np.float32)
    m[[0, 1, 2], 0] = 1
    m[[2, 3, 4, 5], 1] = 1
    m[[0, 6, 7], 2] = 1
    m[[2, 3, 4, 5], 3] = 1
    m[[7], 4] = 1
    return sp.csr_matrix(m)


def _trained_like(layer: MemberMeanLayer, seed: int = 0) -> MemberMeanLayer:
    """Give the layer arbitrary (learned-looking) raw weights and biases, some very negative."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * 3)
        layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen))
    return layer


def test_starts_as_the_plain_mean_of_members():
    member = _membership_with_twins()
    layer = MemberMeanLayer(member).double()
    x = torch.randn(6, 8, dtype=torch.float64)
    dense = torch.as_tensor(member.toarray(), dtype=torch.float64)
    expected = x @ dense / dense.sum(axis=0)
    torch.testing.assert_close(layer(x), expected)


def test_weights_are_a_nonnegative_weighted_mean_whatever_the_raw_values():
    layer = _trained_like(MemberMeanLayer(_membership_with_twins()).double())
    w = layer.effective_weight().detach()
    assert torch.all(w >= 0)
    # a weighted mean: each term's weights sum to one
    torch.testing.assert_close(w.sum(axis=1), torch.ones(5, dtype=torch.float64))
    member = torch.as_tensor(_membership_with_twins().toarray().T, dtype=torch.bool)
    assert torch.all(w[~member] == 0)
    x = torch.randn(5, 8, dtype=torch.float64)
    torch.testing.assert_close(layer(x), x @ w.T + layer.bias[layer.term_group])
    # raising any member gene never lowers an activity: members up => activity up
    for g in range(8):
        up = x.clone()
        up[:, g] += 1.0
        assert torch.all(layer(up) >= layer(x) - 1e-12)


def test_difference_of_activities_is_the_weighted_mean_of_member_differences():
    layer = _trained_like(MemberMeanLayer(_membership_with_twins()).double(), seed=3)
    a, b = torch.randn(30, 8, dtype=torch.float64), torch.randn(40, 8, dtype=torch.float64) + 0.5
    effect = layer(b).mean(0) - layer(a).mean(0)
    lfc = (b.mean(0) - a.mean(0)).numpy()
    weights = layer.member_weights().toarray()
    # the effect is the weighted mean log-fold change of the members, exactly
    torch.testing.assert_close(effect, torch.as_tensor(weights @ lfc))
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)


def test_terms_with_identical_members_share_weights_and_activities():
    layer = _trained_like(MemberMeanLayer(_membership_with_twins()))
    assert layer.n_groups == 4  # five terms, four distinct member sets
    out = layer(torch.randn(9, 8))
    torch.testing.assert_close(out[:, 1], out[:, 3], rtol=0, atol=0)
    w = layer.member_weights().toarray()
    assert np.array_equal(w[1], w[3])
    assert layer.weight.numel() == 3 + 4 + 3 + 1  # member pairs of the distinct sets


def test_gradients_reach_every_member_weight_of_terms_with_several_members():
    layer = MemberMeanLayer(_membership_with_twins())
    layer(torch.randn(4, 8)).square().sum().backward()
    grad = layer.weight.grad
    # the last pair is the one-gene term: its member always weighs 1
    assert torch.all(grad[:-1] != 0) and grad[-1] == 0


def test_center_puts_the_reference_profile_at_zero_and_keeps_differences():
    layer = _trained_like(MemberMeanLayer(_membership_with_twins()).double(), seed=1)
    x = torch.randn(10, 8, dtype=torch.float64)
    before = layer(x) - layer(x[:1])
    profile = torch.rand(8, dtype=torch.float64)
    layer.center(profile)
    torch.testing.assert_close(layer(profile[None]), torch.zeros(1, 5, dtype=torch.float64))
    torch.testing.assert_close(layer(x) - layer(x[:1]), before)


def test_chunked_forward_is_exact():
    layer = _trained_like(MemberMeanLayer(_membership_with_twins()).double())
    x = torch.randn(50, 8, dtype=torch.float64)
    whole = layer(x)
    layer.max_gather_elements = 2 * layer.weight.numel()
    torch.testing.assert_close(layer(x), whole)


def test_module_member_weights_option():
    member = _membership_with_twins()
    free = SENAModule(8, 2, member, n_latent=2, member_weights="free")
    nonneg = SENAModule(8, 2, member, n_latent=2, member_weights="nonnegative")
    assert isinstance(free.fc1, MaskedLinear)
    assert isinstance(nonneg.fc1, MemberMeanLayer)
    with pytest.raises(ValueError, match="member_weights='free' with sena_lambda > 0"):
        SENAModule(8, 2, member, n_latent=2, sena_lambda=0.1, member_weights="nonnegative")
    with pytest.raises(ValueError, match="member_weights must be"):
        SENAModule(8, 2, member, n_latent=2, member_weights="positive")
    # the dense ablation has no members: the option does not apply
    dense = SENAModule(8, 2, member, n_latent=2, encoder="original", member_weights="nonnegative")
    assert isinstance(dense.fc1, torch.nn.Linear)


def test_masked_layer_member_weights_lists_the_member_pairs():
    member = _membership_with_twins()
    torch.manual_seed(0)
    layer = MaskedLinear(member)
    w = layer.member_weights().toarray()
    np.testing.assert_allclose(w, layer.effective_weight().detach().numpy(), rtol=1e-6)
    assert np.array_equal(w != 0, member.toarray().T.astype(bool))
