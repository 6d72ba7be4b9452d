"""The supernet leaves out candidates of probability exactly 0 (scoring one architecture runs one path), and that
changes neither its output nor any gradient (the skipped weights get none instead of zeros)."""
from __future__ import annotations

import logging
import warnings

import torch
from spaces import EveryModule

from nni_udc.strategies import UDC
from nni_udc.strategies.supernet import MixedCompressedOp, MixedLayerChoice

warnings.filterwarnings("ignore")
logging.getLogger("nni").setLevel(logging.ERROR)

X = torch.randn(2, 1, 6, 6)


def _supernet():
    torch.manual_seed(0)
    space = EveryModule()
    strategy = UDC()
    strategy.prepare_cost(space, X)
    strategy.mutate_model(space)
    space(X)  # initialise the activation clips
    return space, strategy


def _outputs_and_gradients(space, strategy, mask_zero: bool):
    """Output and gradients (weights and architecture logits) where the first candidate of every label has
    probability exactly 0 (``mask_zero``) or a logit of -60, which is 0 in neither float32 nor its gradient's
    algebra but contributes below float32's resolution."""
    space.zero_grad()
    for label in strategy.distribution.choices:
        logits = strategy.distribution.logits(label)
        with torch.no_grad():
            torch.manual_seed(len(label))
            logits.copy_(torch.randn_like(logits))
            logits[0] = float("-inf") if mask_zero else -60.0
    y = space(X)
    y.square().sum().backward()
    grads = {name: p.grad.clone() for name, p in space.named_parameters() if p.grad is not None}
    return y.detach(), grads


def test_skipping_zero_probability_candidates_changes_no_output_and_no_gradient():
    space, strategy = _supernet()
    mixed = [m for m in space.modules() if isinstance(m, (MixedCompressedOp, MixedLayerChoice))]
    assert any(isinstance(m, MixedLayerChoice) for m in mixed)
    skipped, y_skipped = _outputs_and_gradients(space, strategy, mask_zero=True)
    kept, y_kept = _outputs_and_gradients(space, strategy, mask_zero=False)
    assert torch.allclose(skipped, kept, atol=1e-5)
    assert set(y_skipped) < set(y_kept)  # a skipped candidate's own weights get no gradient at all
    for name, grad in y_kept.items():
        assert torch.allclose(y_skipped.get(name, torch.zeros_like(grad)).nan_to_num(), grad, atol=1e-5), name


def test_one_hot_layer_choice_runs_only_the_chosen_candidate():
    space, strategy = _supernet()
    (choice,) = [m for m in space.modules() if isinstance(m, MixedLayerChoice)][:1]
    calls = {name: 0 for name in choice.names}
    for name in choice.names:
        choice[name].register_forward_hook(lambda *_, n=name: calls.__setitem__(n, calls[n] + 1))
    sample = {label: c.values[-1] for label, c in strategy.distribution.choices.items()}
    strategy.distribution.set(sample)
    space(X)
    assert calls == {name: int(name == sample[choice.label]) for name in choice.names}
