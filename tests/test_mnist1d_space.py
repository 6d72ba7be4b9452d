"""The registered ``mnist1d`` space: costs agree three ways, the supernet computes its exports (issue 11, item 2)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from spaces import random_samples

from nni_udc.evaluators import COSTS, CostProfiler, exact_costs
from nni_udc.spaces import Mnist1dSpace
from nni_udc.spaces.registry import resolve_space
from nni_udc.strategies import UDC, ExpectedCost

X = torch.zeros(1, 1, 40)


def _samples(space, n, seed=0):
    return random_samples(space, n, seed=seed, keep=lambda s: bool(s["head_g0"] or s["head_g1"]))


def test_registered_with_mnist1d_input_shape():
    assert resolve_space("mnist1d") == (Mnist1dSpace, (1, 40))


@pytest.mark.parametrize("cost", sorted(COSTS))
def test_exact_cost_equals_nni_expression_and_expected_cost_at_one_hot(cost):
    space = Mnist1dSpace()
    expression = CostProfiler(space, X, cost).expression
    expected = ExpectedCost(expression)
    samples = _samples(space, 12)
    assert {s["depth"] for s in samples} == {1, 2, 3} and {s["op0"] for s in samples} == {"conv3", "conv5", "lowrank", "sparse"}
    for sample in samples:
        exact = exact_costs(space.freeze(sample), X, [cost])[cost]
        assert float(expression.freeze(sample)) == pytest.approx(exact, rel=1e-9), sample
        assert float(expected(ExpectedCost.one_hot(sample, expected.labels))) == pytest.approx(exact, rel=1e-9), sample


def test_supernet_at_one_hot_computes_the_exported_model():
    torch.manual_seed(0)
    space, strategy = Mnist1dSpace(widths=(8,), max_depth=2), UDC()
    x = torch.randn(4, 1, 40)
    strategy.prepare_cost(space, x)
    strategy.mutate_model(space)
    space.eval()
    space(x)  # initialise the activation clips
    for sample in _samples(Mnist1dSpace(widths=(8,), max_depth=2), 4, seed=2):
        strategy.distribution.set(sample)
        frozen = space.freeze(sample).eval()
        assert torch.allclose(space(x), frozen(x), atol=1e-5), sample


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="kernel_sizes must be odd positive integers"):
        Mnist1dSpace(kernel_sizes=(3, 4))
    with pytest.raises(ValueError, match="max_depth must be a positive integer, but got 0"):
        Mnist1dSpace(max_depth=0)


@pytest.mark.slow
def test_example_file_searches_offline_with_tiny_epochs(tmp_path):
    # examples/udc-mnist1d.yaml as it ships, with one epoch of each phase (about 25 s on one core)
    text = (Path(__file__).parents[1] / "examples" / "udc-mnist1d.yaml").read_text()
    for old, new in (("epochs: 6 ", "epochs: 1 "), ("finetune_epochs: 10 ", "finetune_epochs: 1 "),
                     ("warmup_epochs: 1 ", "warmup_epochs: 0 "), ("output: runs/udc-mnist1d", f"output: {tmp_path / 'out'}")):
        assert old in text, old
        text = text.replace(old, new)
    (tmp_path / "tiny.yaml").write_text(text)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}
    done = subprocess.run([str(Path(sys.executable).parent / "nni-udc"), "search", "tiny.yaml"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "memory_bits" in json.dumps(report) and (tmp_path / "out" / "model.pt").exists()
