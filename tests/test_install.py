"""The installed environment: what the README promises works after `make test` / `make demo` set it up."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def test_torchvision_imports_and_runs_an_op():
    # The machine's local CPU-only torch wheel breaks torchvision's compiled ops; the install must avoid it.
    import torch
    import torchvision

    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    assert torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0]


def test_nnictl_help_runs():
    out = subprocess.run([str(BIN / "nnictl"), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "create" in out.stdout


def test_cli_help_lists_demo():
    out = subprocess.run([str(BIN / "nni-udc"), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    assert "demo" in out.stdout


def test_cli_bad_argument_exits_2_without_traceback():
    out = subprocess.run([str(BIN / "nni-udc"), "demo", "--trials", "0"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "--trials" in out.stderr and "'0'" in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_version_is_the_installed_distribution():
    from importlib.metadata import version

    import nni_udc

    out = subprocess.run([str(BIN / "nni-udc"), "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"nni-udc {version('nni-udc')}" == f"nni-udc {nni_udc.__version__}"
    assert (Path(nni_udc.__file__).parent / "py.typed").is_file()  # type checkers read our annotations
