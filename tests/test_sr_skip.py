"""``edsr-sr``'s global bicubic skip (issue 14, item 3): an untrained model is bicubic upsampling, exactly; the skip
costs nothing, bakes to plain torch, and a fully convolutional space takes any patch size; ``nni-udc baseline``
refuses several training devices."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nni_udc.config import ConfigError, parse_config
from nni_udc.data.sr import load_sr_splits
from nni_udc.evaluators import exact_costs
from nni_udc.evaluators.sr import mean_psnr
from nni_udc.experiment import _space
from nni_udc.export.bake import bake
from nni_udc.spaces import EdsrSpace
from nni_udc.spaces.edsr_sr import BicubicUpsample

SAMPLE = {"width": 16, "depth": 2, **{f"b_{n}": 4 for n in ("head", "r0c1", "r0c2", "r1c1", "r1c2", "body", "up")},
          **{f"s_{n}": 0.5 for n in ("head", "r0c1", "r0c2", "r1c1", "r1c2", "body", "up")}}


def _bicubic(x: torch.Tensor, scale: int) -> torch.Tensor:
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_an_untrained_model_outputs_exactly_the_bicubic_upsample(scale):
    torch.manual_seed(0)
    space = EdsrSpace(scale=scale)
    x = torch.rand(2, 3, 9, 7)
    for model in (space.freeze(SAMPLE), space.random(), space.random()):
        assert torch.equal(model.eval()(x), _bicubic(x, scale))
    # the network's own part is what differs without the skip: a random residual, not the upsample
    plain = EdsrSpace(scale=scale, skip=None).freeze(SAMPLE).eval()
    assert plain.skip is None and float(plain.upsample[0].weight.abs().max()) > 0
    assert not torch.allclose(plain(x), _bicubic(x, scale), atol=1e-2)


def test_a_zero_residual_network_outputs_the_bicubic_upsample_whatever_its_other_weights():
    torch.manual_seed(1)
    model = EdsrSpace().freeze(SAMPLE)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_()  # every weight random ...
        model.upsample[0].weight.zero_()  # ... but the last conv's: the residual is zero
        model.upsample[0].bias.zero_()
    x = torch.rand(3, 3, 8, 8)
    assert torch.equal(model.eval()(x), BicubicUpsample(2)(x))


def test_the_untrained_models_psnr_is_bicubic_upsamplings_on_the_bundled_patches():
    splits = load_sr_splits(scale=2, patch=12, patches=2)
    model = EdsrSpace(scale=2).freeze(SAMPLE)
    bicubic = BicubicUpsample(2)
    for dataset in (splits.val, splits.test):
        assert mean_psnr(model, dataset) == mean_psnr(bicubic, dataset)
    assert 20.0 < mean_psnr(bicubic, splits.val) < 60.0  # a real image comparison (identical images give inf)


def test_the_skip_costs_nothing():
    x = torch.zeros(1, 3, 24, 24)
    costs = ["params", "memory_bits", "bitops", "macs"]
    with_skip = exact_costs(EdsrSpace().freeze(SAMPLE), x, costs)
    assert with_skip == exact_costs(EdsrSpace(skip=None).freeze(SAMPLE), x, costs)
    assert with_skip["params"] > 0


def test_a_trained_model_with_the_skip_bakes_to_plain_torch_and_runs_at_any_size():
    torch.manual_seed(2)
    model = EdsrSpace().freeze(SAMPLE)
    with torch.no_grad():
        model.upsample[0].weight.normal_(0.0, 0.05)  # as training leaves it: a non-zero residual
        model.train()(torch.rand(4, 3, 12, 12))  # sets the activation clips
    model.eval()
    baked = bake(model, torch.zeros(2, 3, 12, 12), scale_bits=32)
    assert not any("nni" in type(m).__module__ for m in baked.module.modules())
    for shape in ((2, 3, 12, 12), (1, 3, 20, 14)):
        x = torch.rand(*shape)
        assert torch.allclose(baked.module(x), model(x), atol=1e-5)
        assert not torch.allclose(model(x), _bicubic(x, 2), atol=1e-3)


def test_a_bad_skip_is_refused():
    with pytest.raises(ValueError, match=r"skip must be 'bicubic' or None, but got 'nearest'"):
        EdsrSpace(skip="nearest")


def test_the_space_takes_patches_of_any_size_but_not_other_channels():
    config = parse_config({"space": "edsr-sr", "data": {"name": "sr", "args": {"patch": 16}}}, "x.yaml")
    space = _space(config, (3, 16, 16))
    assert space.random()(torch.zeros(1, 3, 16, 16)).shape == (1, 3, 32, 32)
    with pytest.raises(ConfigError, match=r"space 'edsr-sr' takes inputs of shape \(3, 24, 24\), but data set 'sr' "
                                          r"has \(1, 16, 16\)"):
        _space(config, (1, 16, 16))
    digits = parse_config({"space": "digits"}, "x.yaml")  # a space of fixed size still checks the whole shape
    with pytest.raises(ConfigError, match=r"takes inputs of shape \(1, 8, 8\), but data set 'digits' has \(1, 9, 9\)"):
        _space(digits, (1, 9, 9))
