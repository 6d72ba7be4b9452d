"""PSNR and SSIM of the super-resolution evaluator against numbers worked out by hand and against scikit-image
(issue 14, item 2)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch.utils.data import TensorDataset

from nni_udc.evaluators.sr import PSNR, SuperResolutionModule, mean_psnr, psnr, ssim


def test_identical_images_give_infinite_psnr_and_ssim_one():
    x = torch.rand(3, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    assert psnr(x, x).tolist() == [math.inf] * 3
    assert torch.allclose(ssim(x, x), torch.ones(3))


@pytest.mark.parametrize("offset", [0.1, 0.05, 0.25])
def test_a_constant_offset_gives_20_log10_of_its_inverse(offset):
    target = torch.full((2, 3, 8, 8), 0.5)
    expected = 20 * math.log10(1 / offset)  # MSE = offset², PSNR = 10·log10(1 / offset²)
    assert psnr(target + offset, target).tolist() == pytest.approx([expected] * 2, abs=1e-4)


def test_output_is_clipped_to_the_image_range_first():
    target = torch.ones(1, 3, 4, 4)
    assert psnr(target + 5.0, target).tolist() == [math.inf]  # an over-bright output saturates to the target
    assert psnr(torch.full_like(target, -1.0), target * 0.1).tolist() == pytest.approx([20.0], abs=1e-4)


def test_ssim_of_two_flat_images_is_the_luminance_term():
    # flat images: no variance and no covariance, so SSIM = (2ab + C1) / (a² + b² + C1), C1 = 0.01²
    a, b, c1 = 0.5, 0.6, 0.01 ** 2
    value = ssim(torch.full((1, 3, 16, 16), a), torch.full((1, 3, 16, 16), b))
    assert float(value) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-6)


def test_psnr_and_ssim_agree_with_scikit_image():
    rng = np.random.default_rng(1)
    target = rng.random((3, 32, 40))
    output = np.clip(target + rng.normal(0, 0.05, target.shape), 0, 1)
    t, o = (torch.from_numpy(v[None]).float() for v in (target, output))
    assert float(psnr(o, t)) == pytest.approx(peak_signal_noise_ratio(target, output, data_range=1.0), abs=1e-3)
    reference = structural_similarity(target, output, data_range=1.0, channel_axis=0, gaussian_weights=True,
                                      sigma=1.5, use_sample_covariance=False)
    assert float(ssim(o, t)) == pytest.approx(reference, abs=1e-4)


def test_ssim_drops_with_blur_and_noise():
    rng = torch.Generator().manual_seed(2)
    target = torch.rand(1, 3, 24, 24, generator=rng)
    blurred = torch.nn.functional.avg_pool2d(target, 3, stride=1, padding=1)
    noisy = (target + 0.2 * torch.randn(target.shape, generator=rng)).clamp(0, 1)
    assert 0 < float(ssim(noisy, target)) < float(ssim(target * 0.99, target)) <= 1
    assert 0 < float(ssim(blurred, target)) < 1


def test_shapes_must_match():
    with pytest.raises(ValueError, match=r"psnr takes two batches of images of one shape"):
        psnr(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
    with pytest.raises(ValueError, match=r"ssim takes two batches"):
        ssim(torch.zeros(3, 4, 4), torch.zeros(3, 4, 4))


def test_the_metric_and_the_split_score_average_per_image_psnr():
    target = torch.full((2, 3, 4, 4), 0.5)
    output = target.clone()
    output[0] += 0.1  # 20 dB
    output[1] += 0.01  # 40 dB
    metric = PSNR()
    metric.update(output[:1], target[:1])
    metric.update(output[1:], target[1:])
    assert float(metric.compute()) == pytest.approx(30.0, abs=1e-3)
    assert SuperResolutionModule.score_batch(output, target) == pytest.approx((60.0, 2), abs=1e-3)

    class Add(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.shift = torch.nn.Parameter(torch.tensor(0.1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.shift

    assert mean_psnr(Add(), TensorDataset(target, target)) == pytest.approx(20.0, abs=1e-3)
