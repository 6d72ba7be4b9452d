"""The ``sr`` data set: DIV2K-style folders written here, scikit-image's bundled images, bicubic degradation,
seeded splits by image, and clear errors for a missing root (issue 14, item 2)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nni_udc.config import ConfigError, parse_config
from nni_udc.data import DataRootError, load_dataset
from nni_udc.data.sr import BUNDLED, degrade, load_sr_splits
from nni_udc.data.traced import BundledSplit

NNI_UDC = str(Path(sys.executable).parent / "nni-udc")


def _div2k(root: Path, train: int = 4, valid: int = 2, size: tuple[int, int] = (40, 36)) -> list[np.ndarray]:
    """Small RGB PNGs in DIV2K's layout (``DIV2K_train_HR/0001.png`` ..., ``DIV2K_valid_HR/0801.png`` ...)."""
    rng = np.random.default_rng(0)
    images = []
    for folder, first, count in (("DIV2K_train_HR", 1, train), ("DIV2K_valid_HR", 801, valid)):
        if count == 0:
            continue
        (root / folder).mkdir(parents=True)
        for i in range(count):
            image = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(image).save(root / folder / f"{first + i:04d}.png")
            images.append(image)
    return images


def test_div2k_folders_give_aligned_bicubic_pairs(tmp_path):
    images = _div2k(tmp_path)
    splits = load_sr_splits(tmp_path, scale=2, patch=8, patches=3, seed=0)
    assert splits.input_shape == (3, 8, 8) and splits.num_classes == 0 and splits.name == "sr"
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [12, 3, 3]  # valid halved: val 1, test 1
    lr, hr = splits.train.tensors
    assert lr.shape == (12, 3, 8, 8) and hr.shape == (12, 3, 16, 16) and lr.dtype == hr.dtype == torch.float32
    # every HR patch is a crop of a train image, and its LR patch is the same crop of the whole image's bicubic
    # degradation (torch, antialiased)
    first = torch.from_numpy(images[0]).permute(2, 0, 1).float().div(255)[None, :, :36, :40]
    small = degrade(first, 2)[0]
    found = 0
    for x, y in zip(lr[:3], hr[:3]):
        for r in range(0, 36 - 16 + 1, 2):
            for c in range(0, 40 - 16 + 1, 2):
                if torch.equal(first[0, :, r:r + 16, c:c + 16], y):
                    assert torch.allclose(small[:, r // 2:r // 2 + 8, c // 2:c // 2 + 8], x)
                    found += 1
    assert found == 3


def test_degrade_is_torch_bicubic_with_antialiasing():
    hr = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    expected = torch.nn.functional.interpolate(hr, size=(4, 4), mode="bicubic", antialias=True).clamp(0, 1)
    assert torch.equal(degrade(hr, 3), expected)
    flat = torch.full((1, 3, 8, 8), 0.25)
    assert torch.allclose(degrade(flat, 4), torch.full((1, 3, 2, 2), 0.25))


def test_splits_are_seeded_and_by_image(tmp_path):
    _div2k(tmp_path, train=6, valid=0)
    a, b = load_sr_splits(tmp_path, patch=8, patches=2, seed=3), load_sr_splits(tmp_path, patch=8, patches=2, seed=3)
    assert all(torch.equal(x, y) for s in ("train", "val", "test")
               for x, y in zip(getattr(a, s).tensors, getattr(b, s).tensors))
    c = load_sr_splits(tmp_path, patch=8, patches=2, seed=4)
    assert not torch.equal(a.train.tensors[1], c.train.tensors[1])
    # held out by image: 6 images, at least one each for val and test, no HR patch in two splits
    assert [len(s) // 2 for s in (a.train, a.val, a.test)] == [4, 1, 1]
    hr = {split: {tuple(t.flatten()[:20].tolist()) for t in getattr(a, split).tensors[1]}
          for split in ("train", "val", "test")}
    assert not (hr["train"] & hr["val"]) and not (hr["train"] & hr["test"]) and not (hr["val"] & hr["test"])


def test_scikit_image_images_are_bundled_offline():
    splits = load_sr_splits(scale=3, patch=10, patches=2, seed=0)
    n = len(BUNDLED)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 2 * n
    assert splits.train.tensors[1].shape[1:] == (3, 30, 30)
    assert 0 <= float(splits.train.tensors[0].min()) and float(splits.train.tensors[1].max()) <= 1
    assert load_dataset("sr", seed=0, scale=3, patch=10, patches=2).val.tensors[0].shape == splits.val.tensors[0].shape


def test_the_one_shot_parts_split_image_targets_without_classes():
    weights = BundledSplit("sr", "train", part="weights", arch_fraction=0.25, patches=4)
    arch = BundledSplit("sr", "train", part="arch", arch_fraction=0.25, patches=4)
    whole = BundledSplit("sr", "train", patches=4)
    assert len(weights) + len(arch) == len(whole) and len(arch) == round(0.25 * len(whole))


def test_a_missing_root_names_the_path_and_what_to_put_there(tmp_path):
    with pytest.raises(DataRootError, match=r"has no DIV2K_train_HR; put high-resolution images there as DIV2K "
                                            r"ships them: .*/DIV2K_train_HR/\*\.png"):
        load_sr_splits(tmp_path)
    with pytest.raises(DataRootError, match=r"sr: data root '.*nowhere' does not exist"):
        load_sr_splits(tmp_path / "nowhere")
    (tmp_path / "DIV2K_train_HR").mkdir()
    with pytest.raises(DataRootError, match=r"DIV2K_train_HR holds no images"):
        load_sr_splits(tmp_path)


def test_bad_arguments_are_refused_with_their_rule(tmp_path):
    with pytest.raises(ValueError, match=r"sr: scale must be one of 2, 3, 4, got 5"):
        load_sr_splits(scale=5)
    with pytest.raises(ValueError, match=r"sr: unknown argument 'size'"):
        parse_config({"space": "edsr-sr", "data": {"name": "sr", "args": {"size": 3}}}, "x.yaml")
    _div2k(tmp_path, train=3, valid=0, size=(12, 12))
    with pytest.raises(DataRootError, match=r"sr: 2 image\(s\) cannot make train, val and test splits"):
        load_sr_splits(tmp_path, patch=4, images=2)
    with pytest.raises(DataRootError, match=r"an image of 12x12 pixels is too small for LR patches of 8 at scale 2"):
        load_sr_splits(tmp_path, patch=8)


def test_the_config_checks_the_root_and_the_cli_exits_2(tmp_path):
    with pytest.raises(ConfigError, match=r"^x\.yaml: data: sr: data root .* does not exist"):
        parse_config({"space": "edsr-sr", "data": {"name": "sr", "root": str(tmp_path / "div2k")}}, "x.yaml")
    bundled = parse_config({"space": "edsr-sr", "data": {"name": "sr"}}, "x.yaml")
    assert bundled.data.root is None
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(f"space: edsr-sr\ndata: {{name: sr, root: div2k}}\noutput: {tmp_path / 'run'}\n")
    done = subprocess.run([NNI_UDC, "search", str(experiment)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith(
        f"data: sr: data root '{tmp_path / 'div2k'}' does not exist; it must be a folder holding DIV2K_train_HR: "
        f"put high-resolution images there as DIV2K ships them: {tmp_path / 'div2k'}/DIV2K_train_HR/*.png "
        f"(training) and, optionally, {tmp_path / 'div2k'}/DIV2K_valid_HR/*.png (halved into val and test); "
        f"or leave data.root out for the images bundled with scikit-image")
    assert not (tmp_path / "run").exists()
