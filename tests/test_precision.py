"""The plain training loops follow ``training.precision`` as the Lightning loops do (issue 14, item 4):
``train_classifier`` (multi-trial retrain, uniform baseline) and the single-path supernet."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nni_udc.data import load_digits_splits
from nni_udc.evaluators.precision import Precision
from nni_udc.evaluators.training import train_classifier

CPU = torch.device("cpu")


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


def _output_dtypes(module: nn.Module) -> set[torch.dtype]:
    """The dtypes ``module`` returns while training (a forward hook; evaluation mode is left out)."""
    seen: set[torch.dtype] = set()
    module.register_forward_hook(lambda m, inputs, output: seen.add(output.dtype) if m.training else None)
    return seen


@pytest.mark.parametrize("precision, computed", [("32-true", torch.float32), ("bf16-mixed", torch.bfloat16),
                                                 ("16-mixed", torch.bfloat16), ("64-true", torch.float64)])
def test_train_classifier_computes_in_the_precision_and_returns_float32(precision, computed):
    net = _tiny_net()
    seen = _output_dtypes(net[1])
    scores = train_classifier(net, load_digits_splits(), epochs=1, device="cpu", precision=precision)
    assert seen == {computed}  # 16-mixed on the CPU: bfloat16, as Lightning does
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert 0.5 < scores["test"] <= 1.0  # one epoch on digits learns whatever the precision


def test_bf16_training_is_not_float32_training():
    splits = load_digits_splits()
    full, half = _tiny_net(), _tiny_net()
    train_classifier(full, splits, epochs=1, device="cpu")
    train_classifier(half, splits, epochs=1, device="cpu", precision="bf16-mixed")
    assert not torch.equal(full[1].weight, half[1].weight)


def test_an_unknown_precision_is_refused_before_training():
    net = _tiny_net()
    before = net[1].weight.clone()
    with pytest.raises(ValueError, match=r"precision '16-true': the plain training loops take 32-true, 64-true, "
                                         r"bf16-mixed or 16-mixed"):
        train_classifier(net, load_digits_splits(), epochs=1, device="cpu", precision="16-true")
    assert torch.equal(net[1].weight, before)


def test_precision_of_each_name():
    assert Precision.of("32-true", CPU).autocast_dtype is None
    assert Precision.of("64-true", CPU).weight_dtype == torch.float64
    assert Precision.of("16-mixed", CPU).scaler is None  # bfloat16 on the CPU needs no loss scaling
    x = torch.ones(2, 3)
    assert Precision.of("64-true", CPU).inputs(x).dtype == torch.float64
    assert Precision.of("64-true", CPU).inputs(torch.ones(2, dtype=torch.long)).dtype == torch.long  # class labels


@pytest.mark.parametrize("precision, computed", [("bf16-mixed", torch.bfloat16), ("64-true", torch.float64)])
def test_the_single_path_supernet_computes_in_the_precision(precision, computed):
    from nni_udc.spaces import DigitsSpace
    from nni_udc.strategies import UDC
    from nni_udc.strategies.single_path import train_single_path

    space = DigitsSpace(widths=[8], weight_bits=[2, 8], sparsity=[0.0, 0.5], head_bits=[8], stem_bits=[8])
    strategy = UDC(cost="memory_bits", target=0.1)
    strategy.prepare_cost(space, torch.zeros(2, 1, 8, 8))
    supernet = strategy.mutate_model(space)
    seen = _output_dtypes(supernet)
    before = strategy.distribution.state()
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,)))
    losses = train_single_path(supernet, strategy.distribution, DataLoader(data, batch_size=16), epochs=1,
                               device="cpu", precision=precision)
    assert seen == {computed} and len(losses) == 1
    assert all(p.dtype == torch.float32 for p in supernet.parameters())
    assert all(torch.equal(before[label], after) for label, after in strategy.distribution.state().items())


def test_the_shared_supernet_of_a_study_follows_training_precision(tmp_path):
    from nni_udc.config import parse_config
    from nni_udc.experiment import train_supernet

    weights = {}
    for name, precision in [("a", "32-true"), ("b", "32-true"), ("c", "bf16-mixed")]:
        config = parse_config({"space": {"name": "digits", "args": {"widths": [8]}},
                               "training": {"accelerator": "cpu", "precision": precision, "batch_size": 256}},
                              "inline")
        weights[name] = torch.load(train_supernet(config, epochs=1, output=tmp_path / name), weights_only=True)
    assert all(torch.equal(weights["a"][k], weights["b"][k]) for k in weights["a"])  # seeded: the same weights
    assert not all(torch.equal(weights["a"][k], weights["c"][k]) for k in weights["a"])
    assert all(v.dtype == weights["a"][k].dtype for k, v in weights["c"].items())


@pytest.mark.slow  # a one-shot search and its fine-tune (about 25 s)
def test_a_search_in_float64_exports_a_float32_model(tmp_path):
    # Lightning's 64-true turns the supernet and the fine-tuned model to float64; costing, scoring and export take
    # the found model in float32 (nni_udc/strategies/udc.py)
    import json

    from nni_udc.config import parse_config
    from nni_udc.experiment import run_search

    config = parse_config({"space": "digits", "output": str(tmp_path / "out"),
                           "training": {"epochs": 1, "finetune_epochs": 1, "accelerator": "cpu",
                                        "precision": "64-true"}}, str(tmp_path / "exp.yaml"))
    outcome = run_search(config, target=0.1, logger=False)
    assert all(p.dtype == torch.float32 for p in outcome.model.parameters())
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["relative_cost"] <= 0.1 and 0.0 < outcome.accuracy <= 1.0
