"""``UDC(sampled=[...])``: while the supernet trains, a sampled argument of each layer computes one drawn candidate
(with the mixture's gradient to its probabilities); in evaluation, and for a decided choice, nothing changes."""
from __future__ import annotations

import logging
import warnings

import nni
import pytest
import torch
from nni.nas.nn.pytorch import ModelSpace
from spaces import EveryModule

from nni_udc.nn import MutableQuantConv2d, bits_choice, sparsity_choice
from nni_udc.strategies import UDC

warnings.filterwarnings("ignore")
logging.getLogger("nni").setLevel(logging.ERROR)

X = torch.randn(2, 1, 6, 6)


def _supernet(sampled=(), space=None, x=X):
    torch.manual_seed(0)
    space = space or EveryModule()
    strategy = UDC(sampled=sampled)
    strategy.prepare_cost(space, x)
    strategy.mutate_model(space)
    space(x)  # initialise the activation clips
    return space, strategy


def _set_logits(strategy, label, logits):
    with torch.no_grad():
        strategy.distribution.logits(label).copy_(torch.tensor(logits))


def test_a_training_forward_computes_the_drawn_candidate_alone():
    space, strategy = _supernet(sampled=["sparsity", "weight_bits"])
    q1 = space.q1
    assert q1.sampled == {"sparsity", "weight_bits"}
    _set_logits(strategy, "s1", [0.3, -0.2])
    _set_logits(strategy, "b_tied", [-0.5, 0.4])
    seen = set()
    for _ in range(12):
        space.train()
        space(X)
        drawn = dict(q1._drawn)
        space.train()
        with torch.no_grad():
            trained = q1.mixed_weight()  # the forward's draws are kept until the next forward
        state = strategy.distribution.state()
        strategy.distribution.set({"s1": drawn["sparsity"], "b_tied": drawn["weight_bits"]})
        space.eval()
        with torch.no_grad():
            one_hot = q1.mixed_weight()
        strategy.distribution.restore(state)
        assert torch.equal(trained, one_hot), drawn
        seen.add((drawn["sparsity"], drawn["weight_bits"]))
    assert len(seen) > 1  # drawn anew at every forward pass


def test_draws_follow_the_probabilities():
    space, strategy = _supernet(sampled=["sparsity"])
    _set_logits(strategy, "s1", [0.0, float(torch.log(torch.tensor(4.0)))])  # p(0.5) = 0.8
    space.train()
    draws = []
    for _ in range(400):
        space.q1._drawn.clear()  # what the forward pre-hook does
        space.q1._weights("sparsity")
        draws.append(space.q1._drawn["sparsity"])
    assert 0.72 < draws.count(0.5) / len(draws) < 0.88


def test_the_probabilities_get_the_gradient_of_the_mixture_at_the_drawn_point():
    """Straight-through: the gradient to p is the soft mixture's, evaluated with the drawn mask in the forward."""
    space, strategy = _supernet(sampled=["sparsity"])
    q1 = space.q1
    x = torch.randn(2, 8, 6, 6)
    q1.train()
    torch.manual_seed(1)
    q1(x).square().sum().backward()
    drawn = q1._drawn["sparsity"]
    grad = strategy.distribution.logits("s1").grad.clone()
    assert grad.abs().sum() > 0 and torch.isfinite(grad).all()
    # the same gradient by hand: d loss / d p_s = <d loss / d mask, w ⊙ M_s>, through the softmax to the logits
    space.zero_grad()
    logits = strategy.distribution.logits("s1")
    p = torch.softmax(logits, -1)
    by_value = dict(zip(strategy.distribution.choices["s1"].values, p))
    weights = [(v, by_value[v]) for v in sorted(by_value)]
    from nni_udc.strategies.supernet import _straight_through
    q1.sampled = frozenset()
    original = q1._weights
    q1._weights = lambda name: _straight_through(weights, drawn) if name == "sparsity" else original(name)
    q1(x).square().sum().backward()
    assert torch.allclose(logits.grad, grad, atol=1e-6)


def test_evaluation_and_decided_choices_are_unchanged_and_draw_nothing():
    mixed, _ = _supernet()
    sampled, strategy = _supernet(sampled=["sparsity", "weight_bits", "act_bits", "rank"])
    sampled.load_state_dict(mixed.state_dict())  # the first forward (training) set other batch-norm statistics
    mixed.eval(), sampled.eval()
    assert torch.equal(mixed(X), sampled(X))
    sample = strategy.distribution.argmax()
    strategy.distribution.set(sample)
    sampled.train()
    before = torch.random.get_rng_state()
    sampled(X)  # one candidate left per choice: as when an architecture is scored
    assert torch.equal(before, torch.random.get_rng_state())


class _Widths(ModelSpace, label_prefix=None):
    def __init__(self) -> None:
        super().__init__()
        self.conv = MutableQuantConv2d(1, nni.choice("width", [2, 4, 6]), 3, padding=1,
                                       weight_bits=bits_choice("b", [4, 8]), sparsity=sparsity_choice("s", [0.0, 0.5]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_a_drawn_width_is_the_same_for_the_weights_and_the_output_mask():
    space, _ = _supernet(sampled=["out_channels", "sparsity"], space=_Widths())
    space.train()
    widths = set()
    for _ in range(20):
        y = space(X)
        width = space.conv._drawn["out_channels"]
        widths.add(width)
        assert y[:, width:].abs().sum() == 0
        assert (y[:, :width].abs().sum((0, 2, 3)) > 0).all()
    assert widths == {2, 4, 6}


@pytest.mark.parametrize("sampled", ["sparsity", ["sparsity", "depth"], [3], 5])
def test_bad_sampled_arguments_are_named(sampled):
    with pytest.raises(ValueError, match="sampled must be a list of searched layer arguments out of"):
        UDC(sampled=sampled)


@pytest.mark.slow  # one real search
def test_a_search_draws_what_it_is_told_and_exports_the_candidate_its_supernet_scores_best(tmp_path):
    from nni_udc.config import parse_config
    from nni_udc.experiment import build_strategy, quiet, run_search
    from nni_udc.strategies.supernet import MixedCompressedOp

    config = parse_config({
        "space": {"name": "digits", "args": {"widths": [8, 16], "weight_bits": [2, 8], "sparsity": [0.0, 0.5]}},
        "training": {"epochs": 1, "finetune_epochs": 0},
        "strategy": {"name": "udc", "args": {"candidates": 4, "samples": 20, "sampled": ["sparsity", "weight_bits"]}},
        "search": {"target": 0.2}, "output": str(tmp_path / "run")}, "inline")
    strategy = build_strategy(config)
    with pytest.raises(RuntimeError, match="supernet_loss needs a finished search"):
        strategy.supernet_loss({})
    with quiet():
        outcome = run_search(config, strategy=strategy)
    assert outcome.sample == strategy.result.sample  # run_search ran the strategy it was given
    ops = [m for m in strategy._supernet.modules() if isinstance(m, MixedCompressedOp)]
    assert ops and all(m.sampled == {"sparsity", "weight_bits"} for m in ops)
    # parsimony 0: the export is the candidate of lowest supernet loss among those the budget fitter scored
    scored = [sample for sample, _ in strategy._scored[0].losses.values()]
    assert len(scored) > 4
    best = strategy.supernet_loss(outcome.sample)
    assert all(best <= strategy.supernet_loss(s) for s in scored)
    assert strategy.supernet_loss(outcome.sample) == best  # the same batches every time
