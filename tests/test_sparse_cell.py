"""The DARTS-style sparse cell space: sampling, exact cost profiling, and real one-shot DASS searches on digits."""
from __future__ import annotations

import logging
import random
import warnings

import nni
import pytest
import torch
from nni.nas.experiment import NasExperiment, NasExperimentConfig
from nni.nas.nn.pytorch import LayerChoice, ModelSpace
from torch import nn

from nni_udc.data.traced import BundledSplit
from nni_udc.evaluators import CostProfiler, exact_costs
from nni_udc.evaluators.lightning import classification_evaluator
from nni_udc.evaluators.training import accuracy
from nni_udc.nn import MutableQuantConv2d, MutableSparseConv2d, SparseConv2d, bits_choice
from nni_udc.spaces import SparseCellSpace
from nni_udc.strategies import DASS

warnings.filterwarnings("ignore")
logging.getLogger("nni").setLevel(logging.ERROR)
logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

X = torch.zeros(1, 1, 8, 8)
LABELS = [f"cell{c}_node{n}_in{k}" for c in range(2) for n in range(2) for k in range(2)]
OPS = ["conv", "sparse50", "sparse90", "skip", "avgpool"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is several times faster than two on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def space():
    torch.manual_seed(0)
    return SparseCellSpace()


def _random_samples(space, n, seed=0):
    rng = random.Random(seed)
    choices = space.simplify()
    return [{label: rng.choice(choice.values) for label, choice in choices.items()} for _ in range(n)]


def _uniform(op):
    return dict.fromkeys(LABELS, op)


def test_labels_and_candidates(space):
    choices = space.simplify()
    assert sorted(choices) == sorted(LABELS)
    for choice in choices.values():
        assert choice.values == OPS


def test_random_samples_freeze_and_run(space):
    x = torch.randn(4, 1, 8, 8)
    for sample in _random_samples(space, 8):
        model = space.freeze(sample)
        assert not any(isinstance(m, LayerChoice) for m in model.modules())
        assert model(x).shape == (4, 10)
        sparse = sorted(m.sparsity for m in model.modules() if isinstance(m, SparseConv2d))
        expected = sorted({"sparse50": 0.5, "sparse90": 0.9}[op] for op in sample.values() if op.startswith("sparse"))
        assert sparse == expected
        dense = [m for m in model.modules() if type(m) is nn.Conv2d]
        assert len(dense) == 1 + sum(op == "conv" for op in sample.values())  # the stem + chosen dense edges


def test_profiled_memory_equals_exact_memory_of_the_frozen_model(space):
    profiler = CostProfiler(space, X, "memory_bits")
    samples = _random_samples(space, 6, seed=1) + [_uniform(op) for op in OPS]
    for sample in samples:
        exact = exact_costs(space.freeze(sample), X, ["memory_bits"])["memory_bits"]
        assert profiler.profile(sample) == pytest.approx(exact, rel=1e-9), sample


def test_sparser_edges_store_fewer_bits(space):
    profiler = CostProfiler(space, X, "memory_bits")
    memory = {op: profiler.profile(_uniform(op)) for op in OPS}
    assert memory["conv"] > memory["sparse50"] > memory["sparse90"] > memory["skip"] == memory["avgpool"]


class _DenseOnly(ModelSpace, label_prefix=None):
    """Like DigitsSpace: a LayerChoice of dense/quantised ops; a sparse op exists but is not a candidate."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.block = LayerChoice({
            "conv": MutableQuantConv2d(8, 8, 3, padding=1, weight_bits=bits_choice("b", [4, 8])),
            "conv1x1": nn.Conv2d(8, 8, 1),
        }, label="op")
        self.sparse = MutableSparseConv2d(8, 8, 3, padding=1, sparsity=nni.choice("s", [0.5, 0.9]))
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.sparse(self.block(self.stem(x))).mean((2, 3)))


def test_dass_checks_for_a_sparse_layer_choice_candidate(space):
    DASS().check_space(space)  # no error
    with pytest.raises(ValueError, match="no LayerChoice with a MutableSparseConv1d/MutableSparseConv2d/MutableSparseLinear candidate"):
        DASS().check_space(_DenseOnly())


# ----- real one-shot DASS searches on digits ---------------------------------------------------------------

def _search(tmp_path, weight):
    config = NasExperimentConfig("sequential", "raw")
    config.experiment_working_directory = str(tmp_path)
    torch.manual_seed(0)
    space = SparseCellSpace()
    strategy = DASS(weight=weight, seed=0, arc_learning_rate=0.05, finetune_epochs=1, report_costs=["memory_bits"])
    experiment = NasExperiment(space, classification_evaluator("digits", epochs=2), strategy, config)
    experiment.run(debug=False)
    model = experiment.export_top_models(formatter="instance")[0]
    strategy.finetune()
    return model, strategy


@pytest.fixture(scope="module")
def heavy_search(tmp_path_factory):
    return _search(tmp_path_factory.mktemp("dass_w5"), 5.0)


@pytest.mark.slow  # a real NNI experiment
def test_dass_search_returns_the_fine_tuned_model_with_its_exact_cost(heavy_search):
    model, strategy = heavy_search
    result = strategy.result
    assert sorted(result.sample) == sorted(LABELS)
    assert set(result.sample.values()) <= set(OPS)
    assert result.model is model
    assert not any(isinstance(m, LayerChoice) for m in model.modules())
    model.eval()
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    assert result.costs["memory_bits"] == exact_costs(model, X, ["memory_bits"])["memory_bits"]
    assert result.costs["memory_bits"] < result.reference_costs["memory_bits"]
    # the reported accuracy is the fine-tuned model's, on the validation split
    assert result.accuracy == pytest.approx(accuracy(model, BundledSplit("digits", "val")))


@pytest.mark.slow
def test_larger_weight_chooses_sparser_ops_and_less_memory(heavy_search, tmp_path):
    _, heavy = heavy_search
    _, free = _search(tmp_path, 0.0)

    def dense_edges(sample):
        return sum(op == "conv" for op in sample.values())

    assert heavy.result.costs["memory_bits"] < free.result.costs["memory_bits"]
    assert dense_edges(heavy.result.sample) < dense_edges(free.result.sample)
