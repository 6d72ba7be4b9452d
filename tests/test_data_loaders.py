"""Loaders of data sets read from a local root (issue 14): CIFAR, image folders, Speech Commands.

Each test writes a few files in the data set's real on-disk format (CIFAR's pickled batches, PNG folders, 16-bit
wav clips with Speech Commands' list files) and reads them back through the loader and the experiment file.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from nni_udc.config import ConfigError, parse_config
from nni_udc.data import load_dataset
from nni_udc.data.cifar import load_cifar10_splits, load_cifar100_splits, read_cifar_batch
from nni_udc.data.images import AugmentedImages
from nni_udc.data.roots import DataRootError

# ----- CIFAR ---------------------------------------------------------------------------------------------------


def _cifar_batch(rng: np.random.Generator, n: int, label_keys: dict[bytes, int]) -> dict[bytes, object]:
    """A batch dict in the layout of the python-version archives (labels cycle through every class)."""
    batch: dict[bytes, object] = {b"batch_label": b"training batch 1 of 5",
                                  b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                                  b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
    for key, classes in label_keys.items():
        batch[key] = [int(v) for v in np.arange(n) % classes]
    return batch


def _dump(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 images per file: 5 train batches and the test batch of CIFAR-10, train and test of CIFAR-100."""
    root = tmp_path_factory.mktemp("cifar")
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    for i in range(1, 6):
        _dump(folder / f"data_batch_{i}", _cifar_batch(rng, 20, {b"labels": 10}))
    _dump(folder / "test_batch", _cifar_batch(rng, 20, {b"labels": 10}))
    _dump(folder / "batches.meta", {b"label_names": [f"class{i}".encode() for i in range(10)],
                                    b"num_cases_per_batch": 20, b"num_vis": 3072})
    folder = root / "cifar-100-python"
    _dump(folder / "train", _cifar_batch(rng, 200, {b"fine_labels": 100, b"coarse_labels": 20}))
    _dump(folder / "test", _cifar_batch(rng, 40, {b"fine_labels": 100, b"coarse_labels": 20}))
    return root


def test_cifar_batch_pixel_layout(tmp_path: Path) -> None:
    # one image: red plane all 10, green 20, blue 30, except the top-right red pixel (row 0, column 31)
    data = np.repeat(np.array([10, 20, 30], np.uint8), 1024)[None].copy()
    data[0, 31] = 99
    _dump(tmp_path / "b", {b"data": data, b"labels": [4]})
    x, y = read_cifar_batch(tmp_path / "b")
    assert x.shape == (1, 3, 32, 32) and y.tolist() == [4]
    assert x[0, 0, 0, 31] == 99 and x[0, 0, 1, 31] == 10
    assert (x[0, 1] == 20).all() and (x[0, 2] == 30).all()


def test_cifar10_splits(cifar_root: Path) -> None:
    splits = load_cifar10_splits(cifar_root, val_fraction=0.2, augment=False, seed=3)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (80, 20, 20)
    assert splits.input_shape == (3, 32, 32) and splits.num_classes == 10 and splits.name == "cifar10"
    x, y = splits.train.tensors
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and tuple(x.shape[1:]) == (3, 32, 32)
    # per-channel standardisation with the train split's statistics
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    # stratified: the 100 training images hold 10 per class, so val takes 2 of each
    assert torch.bincount(splits.val.tensors[1], minlength=10).tolist() == [2] * 10
    # the test split is the test batch, in order
    assert splits.test.tensors[1].tolist() == [i % 10 for i in range(20)]


def test_cifar_val_split_is_seeded(cifar_root: Path) -> None:
    def val_rows(seed: int) -> torch.Tensor:
        return load_cifar10_splits(cifar_root, val_fraction=0.2, augment=False, seed=seed).val.tensors[0]
    assert torch.equal(val_rows(1), val_rows(1))
    assert not torch.equal(val_rows(1), val_rows(2))


def test_cifar_augmentation_shifts_and_mirrors(cifar_root: Path) -> None:
    splits = load_cifar10_splits(cifar_root, val_fraction=0.2, augment=True)
    assert isinstance(splits.train, AugmentedImages) and not isinstance(splits.val, AugmentedImages)
    original = splits.train.tensors[0][0]
    torch.manual_seed(0)
    seen = [splits.train[0][0] for _ in range(40)]
    assert all(v.shape == original.shape for v in seen)
    assert any(not torch.equal(v, original) for v in seen)
    # each augmented image is the original shifted by at most 4 pixels, maybe mirrored: some shift matches it
    padded = torch.nn.functional.pad(original, (4, 4, 4, 4))
    for v in seen[:8]:
        candidates = [padded[:, 4 + dy:36 + dy, 4 + dx:36 + dx] for dy in range(-4, 5) for dx in range(-4, 5)]
        candidates += [c.flip(-1) for c in candidates]
        assert any(torch.equal(v, c) for c in candidates)
    torch.manual_seed(5)
    first = [splits.train[0][0] for _ in range(5)]
    torch.manual_seed(5)
    assert all(torch.equal(a, splits.train[0][0]) for a in first)


def test_cifar100_fine_and_coarse(cifar_root: Path) -> None:
    fine = load_cifar100_splits(cifar_root, val_fraction=0.5, augment=False)
    assert (len(fine.train), len(fine.val), len(fine.test), fine.num_classes) == (100, 100, 40, 100)
    coarse = load_dataset("cifar100", root=cifar_root, val_fraction=0.5, labels="coarse")
    assert coarse.num_classes == 20 and int(coarse.test.tensors[1].max()) == 19


def test_hostile_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return os.system, (f"touch {marker}",)

    folder = tmp_path / "cifar-10-batches-py"
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        _dump(folder / name, {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]})
    _dump(folder / "data_batch_3", {b"data": Payload(), b"labels": [0, 1]})
    with pytest.raises(DataRootError, match=r"data_batch_3: not loaded, refused: the file asks for (posix|os)\.system"):
        load_cifar10_splits(tmp_path)
    assert not marker.exists()


def test_missing_cifar_root_says_what_to_put_there(tmp_path: Path) -> None:
    with pytest.raises(DataRootError) as error:
        load_cifar10_splits(tmp_path)
    assert str(error.value) == (
        f"cifar10: data root {str(tmp_path)!r} has no cifar-10-batches-py/data_batch_1; extract cifar-10-python.tar.gz "
        f"from https://www.cs.toronto.edu/~kriz/cifar.html into {tmp_path} so that "
        f"{tmp_path}/cifar-10-batches-py/data_batch_1 exists")
    with pytest.raises(DataRootError, match="cifar100: needs data.root, a folder holding cifar-100-python/train"):
        load_cifar100_splits()


# ----- the experiment file ---------------------------------------------------------------------------------------


def test_config_data_root_and_args(cifar_root: Path, tmp_path: Path) -> None:
    (tmp_path / "data").symlink_to(cifar_root)
    data = {"space": "digits", "data": {"name": "cifar10", "root": "data", "args": {"augment": False}}}
    config = parse_config(data, tmp_path / "x.yaml", base=tmp_path)
    assert config.data.root == str(tmp_path / "data")  # relative to the experiment file
    assert config.data.loader_arguments == {"seed": 0, "root": str(tmp_path / "data"), "augment": False}
    assert len(load_dataset("cifar10", **config.data.loader_arguments).test) == 20


@pytest.mark.parametrize(("data", "message"), [
    ({"name": "cifar10", "rot": "/x"}, r"data\.rot: unknown field; allowed fields of data: name, seed, root, args"),
    ({"name": "cifar10"}, r"data: cifar10: needs data\.root, a folder holding cifar-10-batches-py/data_batch_1: "
                          r"extract cifar-10-python\.tar\.gz from https://www\.cs\.toronto\.edu/~kriz/cifar\.html"),
    ({"name": "cifar10", "root": "/no/such"}, r"data: cifar10: data root '/no/such' does not exist"),
    ({"name": "cifar10", "root": ".", "args": {"size": 3}},
     r"data: cifar10: unknown argument 'size'; allowed: val_fraction, augment$"),
    ({"name": "digits", "root": "/x"}, r"data\.root: must be left out: digits is bundled"),
    ({"name": "digits", "args": {"a": 1}}, r"data\.args: must be empty: digits takes no arguments"),
])
def test_config_data_errors(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"space": "digits", "data": data}, "x.yaml")


def test_cli_missing_root_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nni_udc.cli import main

    file = tmp_path / "x.yaml"
    file.write_text(f"space: digits\ndata: {{name: cifar10, root: {tmp_path}}}\n")
    with pytest.raises(SystemExit) as exit_:
        main(["search", str(file)])
    assert exit_.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"nni-udc search: error: {file}: data: cifar10: data root {str(tmp_path)!r} has no "
                           "cifar-10-batches-py/data_batch_1; extract cifar-10-python.tar.gz"), line
    assert "\n" not in line


# ----- image folders ------------------------------------------------------------------------------------------

COLOURS = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}


def _png_folder(root: Path, split: str, per_class: int, rng: np.random.Generator,
                suffix: str = ".png") -> None:
    """``per_class`` 12x10 images per class: the class's colour plus noise, each image different."""
    from PIL import Image

    for name, colour in COLOURS.items():
        folder = root / split / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) * 0.8 + rng.integers(0, 50, (12, 10, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}{suffix}")


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    _png_folder(root, "train", 10, np.random.default_rng(1))
    return root


def test_folder_held_out_splits(image_root: Path) -> None:
    splits = load_dataset("folder", root=image_root, size=8, val_fraction=0.2, test_fraction=0.1, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (21, 6, 3)
    assert splits.input_shape == (3, 8, 8) and splits.num_classes == 3
    for x, y in (splits.train.tensors, splits.val.tensors, splits.test.tensors):
        assert tuple(x.shape[1:]) == (3, 8, 8) and x.dtype == torch.float32
        # labels follow the sorted class names (blue, green, red): each image is brightest in its colour
        assert torch.equal(x.mean(dim=(2, 3)).argmax(dim=1), torch.tensor([2, 1, 0])[y])
    assert torch.bincount(splits.val.tensors[1]).tolist() == [2, 2, 2]
    again = load_dataset("folder", root=image_root, size=8, val_fraction=0.2, test_fraction=0.1, seed=0)
    other = load_dataset("folder", root=image_root, size=8, val_fraction=0.2, test_fraction=0.1, seed=1)
    assert torch.equal(again.val.tensors[0], splits.val.tensors[0])
    assert not torch.equal(other.val.tensors[0], splits.val.tensors[0])


def test_folder_given_val_and_test(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    _png_folder(tmp_path, "train", 4, rng)
    _png_folder(tmp_path, "val", 2, rng, suffix=".jpg")
    _png_folder(tmp_path, "test", 1, rng)
    (tmp_path / "train" / "red" / "notes.txt").write_text("not an image")
    splits = load_dataset("folder", root=tmp_path, size=[6, 5], channels=1, augment=True)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (12, 6, 3)
    assert splits.input_shape == (1, 6, 5) and isinstance(splits.train, AugmentedImages)
    assert splits.test.tensors[1].tolist() == [0, 1, 2]


def test_folder_errors(tmp_path: Path, image_root: Path) -> None:
    with pytest.raises(DataRootError, match=r"folder: data root '.*' has no train; put one folder of images per class "
                                            r"there \(.*/train/<class>/\*\.png or \*\.jpg\)"):
        load_dataset("folder", root=tmp_path)
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DataRootError, match=r"train/cat holds no images"):
        load_dataset("folder", root=tmp_path)
    (tmp_path / "train" / "cat" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DataRootError, match=r"train/cat/0\.png is not a readable image"):
        load_dataset("folder", root=tmp_path)
    with pytest.raises(ConfigError, match=r"data: folder: size must be an integer >= 1 or \[height, width\], got 'big'"):
        parse_config({"space": "digits", "data": {"name": "folder", "root": str(image_root), "args": {"size": "big"}}},
                     "x.yaml")


# ----- Speech Commands -----------------------------------------------------------------------------------------

TONES = {"yes": 500.0, "no": 2000.0, "cat": 1000.0}  # each word folder holds pure tones of one frequency


def _wav(path: Path, samples: np.ndarray, rate: int = 16000) -> None:
    import wave

    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


def _speech_root(root: Path, lists: bool) -> Path:
    """Six speakers per word folder, clips of 0.8 s and 1.2 s (padded and cut), noise, and the list files."""
    t = np.arange(int(1.2 * 16000)) / 16000
    for word, hz in TONES.items():
        for speaker in range(6):
            length = int((0.8 if speaker % 2 else 1.2) * 16000)
            _wav(root / word / f"spk{speaker}_nohash_0.wav", 0.5 * np.sin(2 * np.pi * hz * t[:length]))
    _wav(root / "_background_noise_" / "white.wav", np.random.default_rng(0).normal(0, 0.1, 3 * 16000))
    if lists:
        (root / "validation_list.txt").write_text("".join(f"{w}/spk4_nohash_0.wav\n" for w in TONES))
        (root / "testing_list.txt").write_text("".join(f"{w}/spk5_nohash_0.wav\n" for w in TONES))
    return root


@pytest.fixture(scope="module")
def speech_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _speech_root(tmp_path_factory.mktemp("speech"), lists=True)


def test_speech_commands_mfcc_splits(speech_root: Path) -> None:
    splits = load_dataset("speech-commands", root=speech_root, words=["yes", "no"], unknown_fraction=0.5,
                          silence_fraction=0.5)
    assert splits.input_shape == (1, 49, 10) and splits.num_classes == 4  # yes, no, _unknown_, _silence_
    # train: 8 keyword clips (speakers 0-3), 4 of the 4 'cat' clips as _unknown_, 4 silence clips
    assert (len(splits.train), len(splits.val), len(splits.test)) == (16, 4, 4)
    assert torch.bincount(splits.train.tensors[1]).tolist() == [4, 4, 4, 4]
    assert sorted(splits.val.tensors[1].tolist()) == sorted(splits.test.tensors[1].tolist()) == [0, 1, 2, 3]
    x = splits.train.tensors[0]
    assert x.shape == (16, 1, 49, 10) and torch.isfinite(x).all()
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std(unbiased=False)) - 1) < 1e-4


def test_speech_commands_tone_peaks_in_its_mel_band(speech_root: Path) -> None:
    from nni_udc.data.features import mel_band_centres

    splits = load_dataset("speech-commands", root=speech_root, words=["yes", "no", "cat"], unknown_fraction=0,
                          silence_fraction=0, features="log-mel")
    assert splits.input_shape == (1, 49, 40) and splits.num_classes == 3
    x, y = splits.train.tensors
    centres = mel_band_centres()
    for label, hz in enumerate(TONES.values()):
        # every frame of a clip that still sounds (the 0.8 s clips end at frame 38) peaks in the nearest band
        peaks = x[y == label][:, 0, :38].argmax(dim=-1)
        assert (peaks == int((centres - hz).abs().argmin())).all(), (hz, peaks)


def test_speech_commands_speaker_split_without_lists(tmp_path: Path) -> None:
    from nni_udc.data import speech_commands

    root = _speech_root(tmp_path, lists=False)

    def split_speakers(seed: int) -> tuple[list[int], torch.Tensor]:
        speech_commands._load.cache_clear()  # read the files again: determinism, not the cache
        s = load_dataset("speech-commands", root=root, words=["yes", "no"], unknown_fraction=0.0,
                         silence_fraction=0.0, val_fraction=0.2, test_fraction=0.2, seed=seed)
        # each speaker has one clip per word: a split holds whole speakers when its size is 2 per speaker
        return [len(part) for part in (s.train, s.val, s.test)], s.val.tensors[0]

    (sizes, val), (again, val_again), (_, val_other) = split_speakers(0), split_speakers(0), split_speakers(3)
    assert sizes == again == [8, 2, 2]
    assert torch.equal(val, val_again)
    assert not torch.equal(val, val_other)


def test_speech_commands_errors(tmp_path: Path, speech_root: Path) -> None:
    with pytest.raises(DataRootError, match=r"speech-commands: data root '.*' has no yes; extract https://storage\."
                                            r"googleapis\.com/download\.tensorflow\.org/data/speech_commands_v0\.02\."
                                            r"tar\.gz into .* so that .*/<word>/\*\.wav exists"):
        load_dataset("speech-commands", root=tmp_path)
    _wav(tmp_path / "yes" / "a_nohash_0.wav", np.zeros(8000), rate=8000)
    with pytest.raises(DataRootError, match=r"yes/a_nohash_0\.wav is sampled at 8000 Hz; the clips must be 16000 Hz"):
        load_dataset("speech-commands", root=tmp_path, words=["yes"])
    with pytest.raises(ConfigError, match=r"data: speech-commands: data root '.*' has no up; "):
        parse_config({"space": "digits", "data": {"name": "speech-commands", "root": str(speech_root)}}, "x.yaml")
    with pytest.raises(ConfigError, match=r"speech-commands: n_mfcc \(50\) must not exceed n_mels \(40\)"):
        parse_config({"space": "digits", "data": {"name": "speech-commands", "root": str(speech_root),
                                                  "args": {"words": ["yes"], "n_mfcc": 50}}}, "x.yaml")


def test_traced_split_reads_a_root(cifar_root: Path) -> None:
    # the traceable split NNI ships to trials passes root and args to the loader and divides train in two
    from nni_udc.data.traced import BundledSplit

    weights = BundledSplit("cifar10", "train", part="weights", root=str(cifar_root), val_fraction=0.2)
    arch = BundledSplit("cifar10", "train", part="arch", root=str(cifar_root), val_fraction=0.2)
    assert (len(weights), len(arch)) == (64, 16)
    x, y = weights[0]
    assert tuple(x.shape) == (3, 32, 32) and y.dtype == torch.int64


@pytest.mark.slow
def test_a_search_runs_on_a_data_set_read_from_its_root(cifar_root: Path, tmp_path: Path) -> None:
    """``nni-udc search`` passes ``data.root`` and ``data.args`` to every loader it builds, and the evaluator
    counts the data set's own classes (CIFAR-100's 20 coarse ones, not the default 10)."""
    from nni_udc.cli import main

    file = tmp_path / "cifar.yaml"
    file.write_text(
        "space: {name: resnet-cifar, args: {num_classes: 20}}\n"
        f"data: {{name: cifar100, root: {cifar_root}, args: {{augment: false, labels: coarse}}}}\n"
        "training: {epochs: 1, finetune_epochs: 1, batch_size: 64}\n"
        "strategy: {name: udc}\nsearch: {target: 0.5}\n"
        f"output: {tmp_path / 'run'}\n")
    assert main(["search", str(file)]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["costs"]["memory_bits"] <= 0.5 * report["reference_costs"]["memory_bits"]
    assert 0.0 <= report["test_accuracy"] <= 1.0
