"""BatchNorm statistics are recomputed with the final weights after training (evaluators/batchnorm_stats.py)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from nni_udc.data import load_digits_splits
from nni_udc.evaluators.batchnorm_stats import reestimate_batchnorm
from nni_udc.evaluators.lightning import classification_evaluator
from nni_udc.evaluators.training import train_classifier
from nni_udc.strategies.finetune import finetune


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Linear(4, 2), nn.BatchNorm1d(2))


def test_statistics_are_those_of_the_data_through_the_final_weights_and_the_momentum_is_restored():
    net = _net()
    data = torch.randn(40, 3) * 3 + 2
    with torch.no_grad():
        hidden = net[0](data)
    assert reestimate_batchnorm(net, [(data[:20], None), (data[20:], None)]) == 2
    norm = net[1]
    # a cumulative average of the two batches' means and unbiased variances
    halves = hidden[:20], hidden[20:]
    assert torch.allclose(norm.running_mean, sum(h.mean(0) for h in halves) / 2, atol=1e-5)
    assert torch.allclose(norm.running_var, sum(h.var(0) for h in halves) / 2, atol=1e-4)
    assert norm.momentum == 0.1 and not net.training
    # dropout evaluated during the pass: the second BatchNorm saw net[3](bn(hidden)) without dropout's scaling
    with torch.no_grad():
        out = net[3](norm(hidden))
    assert torch.allclose(net[4].running_mean, sum(o.mean(0) for o in (out[:20], out[20:])) / 2, atol=1e-5)


def test_no_data_keeps_the_statistics_and_no_batchnorm_is_a_no_op():
    net = _net()
    net[1].running_mean.fill_(3.0)
    assert reestimate_batchnorm(net, []) == 0
    assert torch.equal(net[1].running_mean, torch.full((4,), 3.0))
    plain = nn.Linear(3, 2)
    assert reestimate_batchnorm(plain, [torch.randn(4, 3)]) == 0


def test_train_classifier_scores_with_the_statistics_of_its_final_weights():
    splits = load_digits_splits()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))
    train_classifier(net, splits, epochs=1, learning_rate=0.05)
    with torch.no_grad():
        means = [net[1](net[0](x)).mean(0) for x, _ in DataLoader(splits.train, batch_size=64)]
    # the average over the train set's batches through the final weights, not an exponential average over the
    # last training steps
    assert torch.allclose(net[2].running_mean, sum(means) / len(means), atol=1e-4)


def test_the_search_fine_tune_scores_with_the_statistics_of_its_final_weights():
    evaluator = classification_evaluator("digits", epochs=1, accelerator="cpu", precision="64-true")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))
    train = DataLoader(load_digits_splits().train, batch_size=64)  # unshuffled: the same batches below
    accuracy = finetune(net, evaluator, epochs=1, train_dataloaders=train)
    with torch.no_grad():
        means = [net[1](net[0](x.double())).mean(0) for x, _ in train]
    assert torch.allclose(net[2].running_mean, sum(means) / len(means), atol=1e-6)
    with torch.no_grad():  # the accuracy it reports is measured with those statistics
        right = sum(int((net(x.double()).argmax(1) == y).sum()) for x, y in evaluator.val_dataloaders)
    assert accuracy == right / sum(len(y) for _, y in evaluator.val_dataloaders)
