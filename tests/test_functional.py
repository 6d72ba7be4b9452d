"""Properties of the pure tensor math in ``nni_udc.functional``: gradients, quantisation, masks, SVD."""
from __future__ import annotations

import pytest
import torch

from nni_udc.functional import (
    factorize_conv2d,
    factorize_linear,
    fake_quantize_activation,
    fake_quantize_weight,
    magnitude_mask,
    max_rank,
    n_zeros_for,
    topk_mask_ste,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _assert_useful_grad(grad: torch.Tensor | None) -> None:
    assert grad is not None
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0


# --------------------------------------------------------------------------- gradients


def test_weight_fake_quant_per_layer_passes_gradient_straight_through():
    w = torch.randn(4, 3, 3, 3, generator=_gen()).requires_grad_()
    upstream = torch.randn(4, 3, 3, 3, generator=_gen(1))
    (fake_quantize_weight(w, 4) * upstream).sum().backward()
    _assert_useful_grad(w.grad)
    assert torch.allclose(w.grad, upstream)  # straight-through: identity


def test_weight_fake_quant_per_channel_gradient_and_removed_channel_gets_none():
    w = torch.randn(4, 6, generator=_gen()).requires_grad_()
    upstream = torch.rand(4, 6, generator=_gen(1)) + 0.5
    q = fake_quantize_weight(w, [8, 0, 3, 32])
    (q * upstream).sum().backward()
    _assert_useful_grad(w.grad)
    assert torch.equal(q[1], torch.zeros(6))
    assert torch.equal(w.grad[1], torch.zeros(6))
    for c in (0, 2, 3):
        assert torch.allclose(w.grad[c], upstream[c])


def test_activation_fake_quant_gradient_to_input_and_to_alpha():
    x = torch.tensor([-1.0, 0.2, 0.7, 1.1, 2.5, 3.0]).requires_grad_()
    alpha = torch.tensor(2.0, requires_grad=True)
    fake_quantize_activation(x, 4, alpha, signed=False).sum().backward()
    _assert_useful_grad(x.grad)
    _assert_useful_grad(alpha.grad)
    # Inside (0, alpha) the rounding is straight-through; outside, the clip blocks x's gradient.
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    # PACT: each value clipped at alpha contributes 1 to d/dalpha.
    assert alpha.grad.item() == pytest.approx(2.0)


def test_activation_fake_quant_signed_gradient_to_alpha_from_both_sides():
    x = torch.tensor([-3.0, -0.5, 0.5, 4.0]).requires_grad_()
    alpha = torch.tensor(1.0, requires_grad=True)
    y = fake_quantize_activation(x, 3, alpha, signed=True)
    (y * torch.tensor([1.0, 1.0, 1.0, 2.0])).sum().backward()
    _assert_useful_grad(x.grad)
    # lower clip gives -1, upper clip gives +2
    assert alpha.grad.item() == pytest.approx(1.0)
    assert y[0].item() == pytest.approx(-1.0) and y[3].item() == pytest.approx(1.0)


def test_magnitude_mask_gradient_reaches_exactly_the_kept_weights():
    w = torch.randn(5, 7, generator=_gen()).requires_grad_()
    mask = magnitude_mask(w, 0.4)
    assert not mask.requires_grad
    (w * mask).pow(2).sum().backward()
    _assert_useful_grad(w.grad)
    kept = mask.bool()
    assert (w.grad[kept] != 0).all()
    assert (w.grad[~kept] == 0).all()


def test_topk_mask_ste_gradient_reaches_every_score():
    scores = torch.randn(3, 5, generator=_gen()).requires_grad_()
    w = torch.randn(3, 5, generator=_gen(1))
    mask = topk_mask_ste(scores, 0.6)
    assert set(mask.detach().unique().tolist()) <= {0.0, 1.0}
    (w * mask).sum().backward()
    _assert_useful_grad(scores.grad)
    # straight through: masked-out scores also get a gradient (so they can grow back)
    assert torch.allclose(scores.grad, w)


# --------------------------------------------------------------------------- weight quantisation


def test_weight_quant_error_strictly_falls_with_bits_and_32_is_identity():
    w = torch.randn(8, 64, generator=_gen())
    errors = [(fake_quantize_weight(w, b) - w).pow(2).mean().item() for b in (2, 3, 4, 5, 6, 7, 8, 16)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-8
    assert fake_quantize_weight(w, 32) is w or torch.equal(fake_quantize_weight(w, 32), w)
    assert torch.equal(fake_quantize_weight(w, [32] * 8), w)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_weight_quant_at_most_2_pow_bits_levels_per_channel(bits):
    w = torch.randn(6, 200, generator=_gen())
    q = fake_quantize_weight(w, bits)
    for c in range(6):
        levels = q[c].unique()
        assert len(levels) <= 2**bits
        # symmetric narrow range: every value is an integer multiple of the channel's scale
        scale = w[c].abs().max() / (2 ** (bits - 1) - 1)
        k = q[c] / scale
        assert torch.allclose(k, k.round(), atol=1e-4)
        assert k.abs().max() <= 2 ** (bits - 1) - 1 + 1e-4


def test_per_channel_quant_uses_each_channels_own_range():
    w = torch.randn(3, 16, generator=_gen())
    w[1] *= 1e-3  # a channel of tiny weights next to normal ones
    bits = 4
    q = fake_quantize_weight(w, bits)
    # per-channel: the tiny channel stays non-zero and is resolved to within half its own step
    assert (q[1] != 0).sum() >= 12
    own_step = w[1].abs().max() / (2 ** (bits - 1) - 1)
    assert (q[1] - w[1]).abs().max() <= own_step / 2 + 1e-9
    # a single per-tensor scale would crush that channel to zero
    qmax = 2 ** (bits - 1) - 1
    tensor_scale = w.abs().max() / qmax
    per_tensor = torch.clamp(torch.round(w / tensor_scale), -qmax, qmax) * tensor_scale
    assert torch.equal(per_tensor[1], torch.zeros(16))
    # and per-channel equals quantising each channel on its own
    separately = torch.cat([fake_quantize_weight(w[c:c + 1], bits) for c in range(3)])
    assert torch.equal(q, separately)


def test_per_channel_bits_list_equals_quantising_each_channel_at_its_bits():
    w = torch.randn(4, 3, 2, 2, generator=_gen())
    bits = [2, 8, 5, 16]
    q = fake_quantize_weight(w, bits)
    for c, b in enumerate(bits):
        assert torch.equal(q[c], fake_quantize_weight(w[c:c + 1], b)[0])


def test_per_channel_zero_bits_removes_exactly_that_channel():
    w = torch.randn(5, 3, 3, 3, generator=_gen()).requires_grad_()
    q = fake_quantize_weight(w, [8, 8, 0, 8, 8])
    q.sum().backward()
    nonzero_per_channel = (q != 0).flatten(1).sum(1)
    assert nonzero_per_channel[2] == 0
    assert (nonzero_per_channel[[0, 1, 3, 4]] > 0).all()
    assert torch.equal(w.grad[2], torch.zeros(3, 3, 3))
    assert (w.grad[[0, 1, 3, 4]] != 0).all()


def test_per_channel_bits_of_wrong_length_raises():
    with pytest.raises(ValueError, match=r"\(3\).*\(2,\)"):
        fake_quantize_weight(torch.randn(3, 4), [8, 8])


# --------------------------------------------------------------------------- activation quantisation


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_unsigned_activation_quant_levels_within_0_alpha(bits):
    x = torch.linspace(-2.0, 5.0, 1001)
    alpha = torch.tensor(3.0)
    y = fake_quantize_activation(x, bits, alpha, signed=False)
    levels = y.unique()
    assert len(levels) <= 2**bits
    assert len(levels) == 2**bits  # dense input hits every level
    assert levels.min() >= 0.0
    assert levels.max() <= 3.0 + 1e-5
    assert levels.max() == pytest.approx(3.0, abs=1e-5)


def test_signed_activation_quant_levels_within_minus_alpha_alpha():
    x = torch.linspace(-4.0, 4.0, 1001)
    y = fake_quantize_activation(x, 3, torch.tensor(1.5), signed=True)
    levels = y.unique()
    assert len(levels) <= 2**3
    assert levels.min() >= -1.5 - 1e-5 and levels.max() <= 1.5 + 1e-5


def test_activation_quant_32_bits_is_identity():
    x = torch.randn(10, generator=_gen())
    assert torch.equal(fake_quantize_activation(x, 32, torch.tensor(0.1), signed=False), x)


# --------------------------------------------------------------------------- sparsity


@pytest.mark.parametrize("s", [0.0, 0.3, 0.5, 0.9])
@pytest.mark.parametrize("shape", [(7,), (3, 5), (5, 3, 3, 3), (1, 1)])
def test_magnitude_mask_exact_zero_count_and_smallest_dropped(s, shape):
    w = torch.randn(*shape, generator=_gen())
    n = w.numel()
    mask = magnitude_mask(w, s)
    assert int((mask == 0).sum()) == round(s * n) == n_zeros_for(n, s)
    assert int(((w * mask) == 0).sum()) == round(s * n)
    if 0 < round(s * n) < n:
        assert w.abs()[mask == 0].max() <= w.abs()[mask == 1].min()


@pytest.mark.parametrize("s", [0.0, 0.3, 0.5, 0.9])
@pytest.mark.parametrize("n", [1, 7, 13, 45])
def test_topk_mask_ste_exact_zero_count(s, n):
    scores = torch.randn(n, generator=_gen())
    mask = topk_mask_ste(scores, s)
    assert int((mask == 0).sum()) == round(s * n)
    assert int((mask == 1).sum()) == n - round(s * n)


def test_magnitude_mask_with_ties_still_exact():
    w = torch.ones(11)
    assert int((magnitude_mask(w, 0.5) == 0).sum()) == round(0.5 * 11)


@pytest.mark.parametrize("s", [-0.1, 1.0, 1.5])
def test_sparsity_out_of_range_raises(s):
    with pytest.raises(ValueError, match=rf"but got {s!r}$"):
        n_zeros_for(10, s)
    with pytest.raises(ValueError, match=rf"but got {s!r}$"):
        magnitude_mask(torch.randn(10), s)
    with pytest.raises(ValueError, match=rf"but got {s!r}$"):
        topk_mask_ste(torch.randn(10), s)


# --------------------------------------------------------------------------- low rank


def test_factorize_linear_full_rank_is_exact():
    w = torch.randn(6, 4, generator=_gen())
    a, b = factorize_linear(w, 4)
    assert a.shape == (4, 4) and b.shape == (6, 4)
    assert torch.allclose(b @ a, w, atol=1e-5)


@pytest.mark.parametrize("rank", [1, 2, 3, 4])
def test_factorize_linear_is_best_rank_r_eckart_young(rank):
    w = torch.randn(6, 5, generator=_gen(), dtype=torch.float64)
    a, b = factorize_linear(w, rank)
    s = torch.linalg.svdvals(w)
    err = (w - b @ a).pow(2).sum()
    assert err.item() == pytest.approx(s[rank:].pow(2).sum().item(), rel=1e-9, abs=1e-12)
    assert torch.linalg.matrix_rank(b @ a) == rank
    # any other rank-r matrix (here: a perturbed one) does worse
    a2 = a + 1e-2 * torch.randn(a.shape, generator=_gen(1), dtype=torch.float64)
    assert (w - b @ a2).pow(2).sum() > err


def test_factorize_linear_splits_singular_values_evenly():
    w = torch.randn(5, 7, generator=_gen())
    a, b = factorize_linear(w, 3)
    assert torch.allclose(a.norm(dim=1), b.norm(dim=0), atol=1e-5)


def test_factorize_conv2d_shapes_and_full_rank_exact():
    w = torch.randn(6, 2, 3, 3, generator=_gen())
    r = max_rank(6, 2, 3)
    assert r == 6
    first, second = factorize_conv2d(w, r)
    assert first.shape == (6, 2, 3, 3) and second.shape == (6, 6, 1, 1)
    x = torch.randn(1, 2, 5, 5, generator=_gen(1))
    dense = torch.nn.functional.conv2d(x, w, padding=1)
    lr = torch.nn.functional.conv2d(torch.nn.functional.conv2d(x, first, padding=1), second)
    assert torch.allclose(lr, dense, atol=1e-5)


def test_max_rank():
    assert max_rank(16, 8, 3) == 16
    assert max_rank(16, 1, 3) == 9
    assert max_rank(4, 10) == 4
    assert max_rank(20, 2, (1, 3)) == 6


@pytest.mark.parametrize("rank", [0, 5, -1])
def test_factorize_bad_rank_raises(rank):
    with pytest.raises(ValueError, match=rf"\[1, 4\].*but got {rank}$"):
        factorize_linear(torch.randn(4, 6), rank)
    with pytest.raises(ValueError, match=rf"but got {rank}$"):
        factorize_conv2d(torch.randn(4, 1, 2, 2), rank)
