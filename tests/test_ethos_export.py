"""Ethos-U streams written beside an exported model: Arm's encoder on each layer's int8 levels, and their bytes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from spaces import random_samples
from torch import nn

from nni_udc.evaluators.npu import encoded_layer_bytes, encoded_weight_bytes, npu_encoded_size
from nni_udc.export import integer_layers
from nni_udc.export.ethos import npu_levels, write_ethos_streams
from nni_udc.nn import QuantConv1d, QuantConv2d, QuantLinear
from nni_udc.registry import UnknownNameError
from nni_udc.spaces import DigitsSpace


class Net(nn.Module):
    """Quantised (≤ 8 bits, one removed channel), depthwise, float and 1-D layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = QuantConv2d(1, 8, 3, padding=1, weight_bits=[4, 4, 8, 8, 2, 0, 3, 5], sparsity=0.5)
        self.dw = QuantConv2d(8, 8, 3, padding=1, groups=8, weight_bits=8)
        self.plain = nn.Conv2d(8, 12, 1)
        self.seq = QuantConv1d(12, 6, 3, weight_bits=4)
        self.head = QuantLinear(6, 10, weight_bits=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.plain(self.dw(self.conv(x))).flatten(2)
        return self.head(self.seq(x).mean(2))


X = torch.zeros(1, 1, 6, 6)


@pytest.mark.parametrize("target", ["ethos-u55", "ethos-u65"])
def test_streams_are_the_encoder_s_bytes_and_the_totals_add_up(tmp_path, target):
    torch.manual_seed(0)
    model = Net()
    streams = write_ethos_streams(model, tmp_path, target)
    folder = tmp_path / target
    summary = json.loads((folder / "streams.json").read_text())
    assert list(summary["layers"]) == list(streams.layers) == ["conv", "dw", "plain", "seq", "head"]
    assert summary["target"] == target and summary["total_bytes"] == streams.total_bytes
    assert summary["total_bytes"] == sum(layer["bytes"] for layer in summary["layers"].values())
    layers = integer_layers(model)
    for name, stream in streams.layers.items():
        data = (folder / stream.file).read_bytes()
        assert len(data) == stream.weight_bytes > 0
        levels, linear = npu_levels(layers[name]), layers[name].kind == "linear"
        assert len(data) == encoded_weight_bytes(levels, target, depthwise=stream.depthwise, linear=linear)
        assert stream.bytes == encoded_layer_bytes(levels, target, depthwise=stream.depthwise, linear=linear)
    assert streams.layers["conv"].shape_ohwi == (7, 3, 3, 1)  # the removed channel is not deployed
    assert streams.layers["dw"].traversal == "depthwise" and streams.layers["seq"].shape_ohwi == (6, 3, 1, 12)
    # what npu-size reports for the same model, layer by layer
    assert {name: s.bytes for name, s in streams.layers.items()} == npu_encoded_size(model, target)


def test_levels_are_the_integers_or_eight_bit_requantised():
    torch.manual_seed(1)
    (w,) = integer_layers(nn.Sequential(QuantLinear(5, 3, weight_bits=[4, 0, 32]))).values()
    levels = npu_levels(w)[:, 0, 0, :]
    assert levels.dtype == np.int8 and levels.shape == (2, 5)
    assert levels[0].tolist() == w.values[0].tolist() and int(np.abs(levels[0]).max()) == 7
    assert int(np.abs(levels[1]).max()) == 127  # the float channel at 8 bits


def test_a_digits_model_exports_streams(tmp_path):
    space = DigitsSpace()
    (sample,) = random_samples(space, 1, seed=4)
    streams = write_ethos_streams(space.freeze(sample), tmp_path)
    assert {p.name for p in (tmp_path / "ethos-u55").iterdir()} == {"streams.json"} | {
        s.file for s in streams.layers.values()}
    assert streams.total_bytes > 0


def test_an_unknown_target_is_refused_listing_the_known_ones(tmp_path):
    with pytest.raises(UnknownNameError, match="unknown NPU accelerator 'ethos-u85'.*ethos-u55, ethos-u65"):
        write_ethos_streams(nn.Sequential(nn.Linear(2, 2)), tmp_path, "ethos-u85")
