"""Tests for the bundled real-data loaders (nni_udc.data)."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from nni_udc.data import (
    DATASET_NAMES,
    DatasetSplits,
    load_dataset,
    load_digits_splits,
    load_mnist1d_splits,
)

LOADERS = {"digits": load_digits_splits, "mnist1d": load_mnist1d_splits}
#: name -> (train, val, test, input_shape) with default arguments
EXPECTED = {
    "digits": (1079, 359, 359, (1, 8, 8)),
    "mnist1d": (3200, 800, 1000, (1, 40)),
}
TOTAL = {"digits": 1797, "mnist1d": 5000}


@pytest.fixture(scope="module", params=sorted(LOADERS))
def name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def splits(name: str) -> DatasetSplits:
    return LOADERS[name]()


def _parts(s: DatasetSplits) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {"train": s.train.tensors, "val": s.val.tensors, "test": s.test.tensors}


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.tobytes() for row in x.reshape(len(x), -1).numpy()}


def test_sizes_and_metadata(name: str, splits: DatasetSplits) -> None:
    n_train, n_val, n_test, shape = EXPECTED[name]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (n_train, n_val, n_test)
    assert n_train + n_val + n_test == TOTAL[name]
    assert splits.input_shape == shape
    assert splits.num_classes == 10
    assert splits.name == name


def test_shapes_and_dtypes(splits: DatasetSplits) -> None:
    for x, y in _parts(splits).values():
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert tuple(x.shape[1:]) == splits.input_shape
        assert len(x) == len(y)
        assert torch.isfinite(x).all()
        assert set(y.unique().tolist()) == set(range(splits.num_classes))
    x, y = splits.train[0]
    assert tuple(x.shape) == splits.input_shape and y.dim() == 0


def test_frozen(splits: DatasetSplits) -> None:
    with pytest.raises(AttributeError):
        splits.name = "other"  # type: ignore[misc]


def test_splits_disjoint(splits: DatasetSplits) -> None:
    rows = {k: _rows(x) for k, (x, _) in _parts(splits).items()}
    assert not rows["train"] & rows["val"]
    assert not rows["train"] & rows["test"]
    assert not rows["val"] & rows["test"]


def test_splits_cover_whole_dataset(name: str, splits: DatasetSplits) -> None:
    # Every raw sample is distinct (checked for digits: 1797 distinct images), so the union of the
    # splits' rows has exactly as many members as the raw data set when nothing is lost or repeated.
    union = set().union(*(_rows(x) for x, _ in _parts(splits).values()))
    assert len(union) == TOTAL[name]


def test_train_standardised(splits: DatasetSplits) -> None:
    x = splits.train.tensors[0].double()
    assert abs(float(x.mean())) < 1e-5
    assert abs(float(x.std(unbiased=False)) - 1) < 1e-5
    # val/test use the train statistics, so they are close but not exactly standardised
    for x, _ in (splits.val.tensors, splits.test.tensors):
        assert abs(float(x.mean())) < 0.2 and abs(float(x.std()) - 1) < 0.2


def test_stratified(splits: DatasetSplits) -> None:
    fractions = {
        k: torch.bincount(y, minlength=splits.num_classes).double() / len(y) for k, (_, y) in _parts(splits).items()
    }
    assert torch.allclose(fractions["train"], fractions["val"], atol=0.01)
    if splits.name == "digits":  # the MNIST-1D test part is given by the package, not stratified by us
        assert torch.allclose(fractions["train"], fractions["test"], atol=0.01)


def test_same_seed_same_split_other_seed_differs(name: str, splits: DatasetSplits) -> None:
    again = LOADERS[name](seed=0)
    for (xa, ya), (xb, yb) in zip(_parts(splits).values(), _parts(again).values()):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other = LOADERS[name](seed=1)
    assert _rows(other.train.tensors[0]) != _rows(splits.train.tensors[0])
    assert len(other.train) == len(splits.train)


def test_custom_fractions() -> None:
    s = load_digits_splits(val_fraction=0.1, test_fraction=0.3)
    assert (len(s.train), len(s.val), len(s.test)) == (1078, 180, 539)
    m = load_mnist1d_splits(val_fraction=0.25)
    assert (len(m.train), len(m.val), len(m.test)) == (3000, 1000, 1000)


def test_mnist1d_generation_deterministic_and_rng_untouched() -> None:
    from mnist1d.data import get_dataset_args

    from nni_udc.data import mnist1d as mod

    assert get_dataset_args().seed == mod.DEFAULT_DATA_SEED
    x, y, x_test, y_test = mod._generate(mod.DEFAULT_DATA_SEED)
    assert (x.shape, y.shape, x_test.shape, y_test.shape) == ((4000, 40), (4000,), (1000, 40), (1000,))
    mod._generate.cache_clear()
    random.seed(123)
    np.random.seed(123)
    expected_py, expected_np = random.random(), np.random.rand()
    random.seed(123)
    np.random.seed(123)
    x2, y2, _, _ = mod._generate(mod.DEFAULT_DATA_SEED)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert (random.random(), np.random.rand()) == (expected_py, expected_np)


def test_load_dataset_dispatch() -> None:
    assert DATASET_NAMES == ("cifar10", "cifar100", "digits", "folder", "mnist1d", "speech-commands", "sr")
    s = load_dataset("digits", seed=3, val_fraction=0.25)
    ref = load_digits_splits(seed=3, val_fraction=0.25)
    assert torch.equal(s.train.tensors[0], ref.train.tensors[0])
    assert load_dataset("mnist1d").name == "mnist1d"


def test_unknown_dataset_lists_known_names() -> None:
    with pytest.raises(ValueError, match="cifar") as info:
        load_dataset("cifar")
    assert "digits" in str(info.value) and "mnist1d" in str(info.value)


@pytest.mark.parametrize(
    ("kw", "pattern"),
    [
        ({"val_fraction": 0.0}, r"val_fraction.*0\.0"),
        ({"val_fraction": 1.0}, r"val_fraction.*1\.0"),
        ({"val_fraction": -0.1}, r"val_fraction.*-0\.1"),
        ({"test_fraction": 1.5}, r"test_fraction.*1\.5"),
        ({"test_fraction": "0.2"}, r"test_fraction.*'0\.2'"),
        ({"val_fraction": float("nan")}, r"val_fraction.*nan"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, r"val_fraction \+ test_fraction.*0\.5 \+ 0\.5"),
        ({"val_fraction": 0.6, "test_fraction": 0.7}, r"val_fraction \+ test_fraction.*0\.6 \+ 0\.7"),
        ({"val_fraction": 0.001}, r"val_fraction takes 2 of"),
        ({"seed": -1}, r"seed.*-1"),
        ({"seed": 1.5}, r"seed.*1\.5"),
    ],
)
def test_digits_bad_arguments(kw: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        load_digits_splits(**kw)


@pytest.mark.parametrize(
    ("kw", "pattern"),
    [
        ({"val_fraction": 0}, r"val_fraction.*\b0\b"),
        ({"val_fraction": 1}, r"val_fraction.*\b1\b"),
        ({"val_fraction": True}, r"val_fraction.*True"),
        ({"seed": None}, r"seed.*None"),
        ({"data_seed": -5}, r"data_seed.*-5"),
    ],
)
def test_mnist1d_bad_arguments(kw: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        load_mnist1d_splits(**kw)


def test_load_dataset_passes_bad_arguments_through() -> None:
    with pytest.raises(ValueError, match=r"val_fraction.*2"):
        load_dataset("mnist1d", val_fraction=2)
