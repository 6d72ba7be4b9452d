"""Symbolic costs over NNI model spaces agree with exact costs of the frozen models.

``CostProfiler`` builds one NNI expression per cost; evaluating it on a sample must give exactly
what :func:`exact_costs` measures on ``space.freeze(sample)``. NNI's own ``FlopsProfiler`` and
``NumParamsProfiler`` (taught our modules by ``register_nni_formulas``) must agree as well,
and an ``ExpressionConstraint`` on the expression must accept exactly the models within budget.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from nni.mutable import ConstraintViolation, ExpressionConstraint, SampleValidationError
from nni.nas.nn.pytorch import ModelSpace
from nni.nas.profiler.pytorch.flops import FlopsProfiler, NumParamsProfiler
from nni.nas.space import current_model, model_context
from spaces import CHANNEL_GROUPS, EveryModule, keeps_a_channel

from nni_udc.evaluators import COSTS, CostProfiler, exact_costs, register_nni_formulas
from nni_udc.nn import (
    MutableQuantLinear,
    channel_bits_choice,
)
from nni_udc.spaces import DigitsSpace

X = torch.zeros(1, 1, 8, 8)
SEEDS = range(10)


def _samples(space: ModelSpace, seeds=SEEDS) -> list[dict]:
    out = []
    for seed in seeds:
        sample: dict = {}
        space.random(memo=sample, random_state=np.random.RandomState(seed))
        if not isinstance(space, EveryModule) or keeps_a_channel(sample):
            out.append(sample)
    return out


@pytest.fixture(scope="module")
def space() -> EveryModule:
    return EveryModule()


@pytest.fixture(scope="module")
def samples(space) -> list[dict]:
    return _samples(space)


@pytest.fixture(scope="module")
def exact(space, samples) -> list[dict[str, float]]:
    return [exact_costs(space.freeze(s), X) for s in samples]


def test_space_has_every_mutable(space):
    labels = set(space.simplify())
    assert labels == {"width", "b_tied", "s1", "a1", *CHANNEL_GROUPS, "op", "r", "s2", "b_op", "depth", "b_rep0", "b_rep1",
                      "s3", "r_head"}


def test_samples_cover_the_space(samples):
    # The agreement tests below are only meaningful if the samples exercise every structure.
    assert {s["op"] for s in samples} == {"lowrank", "sparse", "skip"}
    assert {s["depth"] for s in samples} == {1, 2}
    assert {s["width"] for s in samples} == {4, 8}
    assert any(s[label] == 0 for s in samples for label in CHANNEL_GROUPS)     # a removed channel group
    assert any(s["s1"] > 0 for s in samples)                                    # a sparse quantised layer


@pytest.mark.parametrize("cost", sorted(COSTS))
def test_cost_profiler_equals_exact(space, samples, exact, cost):
    profiler = CostProfiler(space, X, cost)
    got = [profiler.profile(s) for s in samples]
    want = [e[cost] for e in exact]
    assert got == pytest.approx(want, rel=1e-9)
    assert len(set(want)) > 3          # the cost really varies over the samples


@pytest.fixture
def nni_knows_our_modules() -> None:
    register_nni_formulas()


def test_importing_registers_nothing_with_nni():
    # a fresh interpreter: importing every package of nni-udc leaves NNI's profiler registries as they were
    code = """
import nni.nas.profiler.pytorch.flops as flops
import nni.nas.profiler.pytorch.utils.misc as misc
before = (set(flops._flops_formula), list(misc._leaf_registry))
import nni_udc, nni_udc.evaluators, nni_udc.strategies, nni_udc.spaces, nni_udc.pareto, nni_udc.cli, nni_udc.experiment
assert (set(flops._flops_formula), list(misc._leaf_registry)) == before
from nni_udc.evaluators import register_nni_formulas
register_nni_formulas()
assert len(flops._flops_formula) > len(before[0]) and len(misc._leaf_registry) > len(before[1])
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def test_nni_flops_profiler_equals_exact_macs(space, samples, exact, nni_knows_our_modules):
    profiler = FlopsProfiler(space, X, count_bias=False, count_normalization=False, count_activation=False)
    assert [profiler.profile(s) for s in samples] == pytest.approx([e["macs"] for e in exact], rel=1e-9)


def test_nni_params_profiler_equals_exact_params(space, samples, exact, nni_knows_our_modules):
    profiler = NumParamsProfiler(space, X, count_normalization=False)
    assert [profiler.profile(s) for s in samples] == pytest.approx([e["params"] for e in exact], rel=1e-9)


def test_expression_constraint_accepts_exactly_the_models_within_budget(space, samples, exact):
    profiler = CostProfiler(space, X, "memory_bits")
    costs = [e["memory_bits"] for e in exact]
    budget = float(np.median(costs))
    constraint = ExpressionConstraint(profiler.expression <= budget, label="budget")
    for sample, cost in zip(samples, costs):
        assert constraint.contains(sample) == (cost <= budget), (sample, cost, budget)
        if cost > budget:
            assert isinstance(constraint.check_contains(sample), ConstraintViolation)
            with pytest.raises(ConstraintViolation):
                constraint.freeze(sample)
        else:
            assert constraint.freeze(sample) is None
    assert min(costs) <= budget < max(costs)       # both outcomes were tested


class Budgeted(EveryModule):
    """``EveryModule`` under a memory budget, expressed with NNI constraints inside the space."""

    def __init__(self, budget: float):
        super().__init__()
        if current_model() is None:  # building the space, not a frozen model
            memory = CostProfiler(self, X, "memory_bits").expression
            self.add_mutable(ExpressionConstraint(memory <= budget, label="memory_budget"))
            # 0 bits on every channel of ``q2`` is not a model (its freeze raises ValueError, which NNI does
            # not retry), so state it as a constraint too.
            kept = sum((b > 0) * 1 for b in self.q2.args["weight_bits"])
            self.add_mutable(ExpressionConstraint(kept >= 1, label="keep_a_channel"))

    def freeze(self, sample):
        self.validate(sample)  # raises ConstraintViolation for samples outside the constraints
        with model_context(sample):
            return self.__class__(*self.trace_args, **self.trace_kwargs)


def test_space_with_budget_constraint_only_yields_models_within_budget(exact):
    budget = float(np.median([e["memory_bits"] for e in exact]))
    budgeted = Budgeted(budget)
    assert {"memory_budget", "keep_a_channel"} <= set(budgeted.simplify())
    plain = EveryModule()
    accepted = rejected = 0
    for seed in range(40):
        memo: dict = {}
        try:
            model = budgeted.random(memo=memo, random_state=np.random.RandomState(seed))
        except SampleValidationError:
            if all(memo.get(label) == 0 for label in CHANNEL_GROUPS):
                continue  # rejected for removing every channel: no model to measure
            # Rejected: complete the sample on the unconstrained space and measure it.
            plain.random(memo=memo, random_state=np.random.RandomState(seed))
            cost = exact_costs(plain.freeze(memo), X)["memory_bits"]
            assert cost > budget
            rejected += 1
        else:
            assert model.simplify() == {}      # a frozen model: nothing left to choose
            assert exact_costs(model, X)["memory_bits"] <= budget
            assert budgeted.contains(memo)
            accepted += 1
    assert accepted >= 5 and rejected >= 5


def test_digits_space_profiler_equals_exact():
    space = DigitsSpace()
    x = torch.zeros(1, 1, 8, 8)
    samples = _samples(space, range(5))
    exact = [exact_costs(space.freeze(s), x) for s in samples]
    for cost in ("memory_bits", "bitops", "macs", "params"):
        profiler = CostProfiler(space, x, cost)
        assert [profiler.profile(s) for s in samples] == pytest.approx([e[cost] for e in exact], rel=1e-9), cost


class _HalfRemoved(ModelSpace, label_prefix=None):
    def __init__(self):
        super().__init__()
        self.fc = MutableQuantLinear(4, 2, weight_bits=channel_bits_choice("h", 2, [0, 8]))

    def forward(self, x):
        return self.fc(x)


def test_nni_flops_with_bias_skips_removed_channels(nni_knows_our_modules):
    # one kept output: 4 MACs and 1 bias add; the removed channel has neither weights nor bias
    assert FlopsProfiler(_HalfRemoved(), torch.zeros(1, 4)).profile({"h_g0": 0, "h_g1": 8}) == 5
