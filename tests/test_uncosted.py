"""Costs never skip a layer silently (issue 11, item 3): plain torch layers are costed as float layers, and a
module holding weights that no cost formula covers is refused with its path and type, by the exact cost and by
the NNI expression alike."""
from __future__ import annotations

import nni
import pytest
import torch
import torch.nn.functional as F
from nni.nas.nn.pytorch import ModelSpace
from torch import nn

from nni_udc.evaluators import CostProfiler, exact_costs, model_specs
from nni_udc.nn import MutableQuantLinear, QuantConv1d, bits_choice


class Plain1d(nn.Module):
    """The model of the issue: plain Conv1d layers, BatchNorm, a linear head (1,563 parameters on (1, 40))."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv1d(1, 8, 5, padding=2), nn.BatchNorm1d(8), nn.ReLU(),
                                      nn.Conv1d(8, 16, 5, stride=2, padding=2, groups=2), nn.ReLU())
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(-1))


def test_plain_conv1d_is_costed_as_a_float_layer():
    costs = exact_costs(Plain1d(), torch.zeros(1, 1, 40))
    # conv 1→8, k5: 40 + 8 biases; grouped conv 8→16, groups 2, k5: fan-in 4·5 = 20 → 320 + 16; linear 160 + 10
    conv1, conv2, fc = 8 * 5 + 8, 16 * 20 + 16, 16 * 10 + 10
    assert costs["params"] == conv1 + conv2 + fc
    assert costs["params"] == sum(p.numel() for n, p in Plain1d().named_parameters() if ".1." not in n)  # all but BN
    # L: 40, then (40 + 4 - 5) // 2 + 1 = 20; float weights and inputs (32 × 32 bits per MAC)
    macs = 40 * 8 * 5 + 20 * 16 * 20 + 160
    assert costs["macs"] == macs and costs["bitops"] == macs * 32 * 32
    assert costs["memory_bits"] == (conv1 + conv2 + fc) * 32


class WithLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = QuantConv1d(1, 4, 3, weight_bits=4)
        self.rnn = nn.LSTM(4, 8, batch_first=True)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.conv(x).transpose(1, 2))
        return self.head(h[:, -1])


class OwnWeight(nn.Module):
    """A custom layer calling ``F.conv1d`` on a parameter of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 1, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight)


def test_lstm_is_refused_with_its_path_and_type():
    with pytest.raises(TypeError, match=r"cannot cost module 'rnn' \(LSTM\): it holds weights") as error:
        exact_costs(WithLSTM(), torch.zeros(1, 1, 40))
    message = str(error.value)
    assert "Conv1d" in message and "QuantConv1d" in message and "BatchNorm costs nothing" in message
    assert "register_spec_builder(LSTM)" in message


def test_custom_layer_with_its_own_weight_is_refused():
    model = nn.Sequential(nn.Conv1d(1, 1, 1), nn.Sequential(OwnWeight()))
    with pytest.raises(TypeError, match=r"'1.0' \(OwnWeight\)"):
        model_specs(model, torch.zeros(1, 1, 40))


def test_a_model_that_is_the_uncosted_layer_is_named_as_the_model():
    with pytest.raises(TypeError, match=r"'<model>' \(OwnWeight\)"):
        model_specs(OwnWeight(), torch.zeros(1, 1, 40))


def test_uncosted_module_that_never_runs_costs_nothing():
    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)
            self.spare = nn.LSTM(4, 4)

        def forward(self, x):
            return self.fc(x)

    assert exact_costs(Unused(), torch.zeros(1, 4))["params"] == 10


def test_cost_profiler_refuses_uncosted_weights_too():
    class Space(ModelSpace, label_prefix=None):
        def __init__(self):
            super().__init__()
            self.own = OwnWeight()
            self.fc = MutableQuantLinear(38 * 4, 2, weight_bits=bits_choice("b", [4, 8]))

        def forward(self, x):
            return self.fc(self.own(x).flatten(1))

    with pytest.raises(TypeError, match=r"'own' \(OwnWeight\)"):
        CostProfiler(Space(), torch.zeros(1, 1, 40), "params")


def test_batchnorm_and_activation_clips_cost_nothing():
    model = nn.Sequential(QuantConv1d(1, 4, 3, act_bits=8, weight_bits=8), nn.BatchNorm1d(4))
    assert exact_costs(model, torch.zeros(2, 1, 10))["params"] == 4 * 3 + 4
    assert nni.__version__  # NNI imported: the refusal does not depend on NNI's profilers
