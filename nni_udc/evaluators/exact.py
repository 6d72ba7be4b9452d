"""Exact cost of a frozen model: run one forward pass, record each weight layer's spec, apply the formulas."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from nni_udc.evaluators.batchnorm_inputs import BatchNormInputs, followed_by_batchnorm
from nni_udc.evaluators.costs import COSTS, CostFn, total
from nni_udc.evaluators.layers import find_spec_builder, holds_uncosted_weights, uncosted_error
from nni_udc.evaluators.spec import LayerSpec

__all__ = ["cost_source", "exact_costs", "frozen_cost", "model_specs"]


def model_specs(model: nn.Module, example_input: torch.Tensor | tuple) -> list[LayerSpec]:
    """Specs of every weight layer that runs in ``model``'s forward pass on ``example_input``.

    A module with a spec builder is described as a whole (its children are not visited again);
    layers that never run (e.g. unused branches) are left out. Plain ``nn.Conv1d``/``nn.Conv2d``/``nn.Linear``
    are float layers (32-bit weights and inputs). A module that runs and holds weights no cost formula covers
    (an ``nn.LSTM``, a custom layer with its own ``nn.Parameter``) is refused, never skipped.

    Raises:
        TypeError: such a module ran; the message names its path and type and the layer types that are costed.

    Example:
        >>> from nni_udc.nn import QuantConv2d
        >>> specs = model_specs(nn.Sequential(QuantConv2d(1, 4, 3, weight_bits=4)), torch.zeros(1, 1, 8, 8))
        >>> specs[0].positions, specs[0].weight_bits
        (36, 4)
    """
    found: dict[str, list[LayerSpec]] = {}
    handles: list[Any] = []
    owners: list[str] = []
    refused: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if any(owner == "" or name.startswith(owner + ".") for owner in owners):  # "" = the model itself
            continue
        builder = find_spec_builder(module)
        if builder is None:
            if holds_uncosted_weights(module):  # refused only if it runs: an unused module costs nothing
                def ran(mod: nn.Module, args: Any, output: Any, name: str = name) -> None:
                    refused.setdefault(name, mod)

                handles.append(module.register_forward_hook(ran))
            continue
        owners.append(name)

        def hook(mod: nn.Module, args: Any, output: torch.Tensor, name: str = name, builder=builder) -> None:
            found.setdefault(name, builder(name, mod, tuple(output.shape)))

        handles.append(module.register_forward_hook(hook))
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), BatchNormInputs(model, lambda m: find_spec_builder(m) is not None) as batchnorms:
            model(*args)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    if refused:
        raise uncosted_error(list(refused.items()))
    followed = batchnorms.layers()  # their BatchNorm folds into them on export: they store a bias
    return [spec for name in owners if name in found for spec in followed_by_batchnorm(found[name], name in followed)]


def exact_costs(model: nn.Module, example_input: torch.Tensor | tuple,
                costs: Iterable[str | CostFn] | None = None) -> dict[str, float]:
    """Every requested cost of a frozen ``model`` (default: all of :data:`~nni_udc.evaluators.costs.COSTS`).

    Example:
        >>> from nni_udc.nn import QuantLinear
        >>> exact_costs(nn.Sequential(QuantLinear(10, 4, weight_bits=8)), torch.zeros(1, 10))['memory_bits']
        512.0
    """
    specs = model_specs(model, example_input)
    names = list(COSTS) if costs is None else list(costs)
    return {cost if isinstance(cost, str) else getattr(cost, "__name__", repr(cost)): frozen_cost(model, specs, cost)
            for cost in names}


def frozen_cost(model: nn.Module, specs: list[LayerSpec], cost: str | CostFn) -> float:
    """One cost of a frozen ``model`` whose layer ``specs`` are given (:func:`model_specs`), as :func:`exact_costs`
    reports it: a cost that can be measured on the model itself (Ethos-U bytes: Arm's encoder on the model's
    compressed weights) reports the measurement; its formula is what a search optimises."""
    measure = getattr(cost, "measure", None)
    return float(measure(model)) if measure is not None else float(total(specs, cost))


def cost_source(cost: str | CostFn) -> str:
    """What :func:`exact_costs` reports for ``cost``: ``'formula'``, or the measurement it makes instead.

    Example:
        >>> from nni_udc.evaluators.targets import load_target
        >>> cost_source("memory_bits"), cost_source(load_target("ethos-u55").cost("npu_weight_bytes"))
        ('formula', "Arm's Ethos-U encoder (ethos-u-vela, ethos-u55)")
    """
    return "formula" if getattr(cost, "measure", None) is None else str(cost.measured_by)  # type: ignore[union-attr]
