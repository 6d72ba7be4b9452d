"""The README's main command, shortened: a real NNI search on digits that prints the results table."""
from __future__ import annotations

import json

import pytest

from nni_udc.cli import main


@pytest.mark.slow
def test_demo_prints_table_with_baselines_and_found_models(tmp_path, capsys):
    assert main(["demo", "--trials", "3", "--epochs", "2", "--strategy", "random", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for column in ("test acc", "size (bytes)", "BitOps (M)"):
        assert column in out
    assert "float32 (widest)" in out and "uniform 8-bit" in out and "found #1" in out

    report = json.loads((tmp_path / "results.json").read_text())
    assert len(report["trials"]) == 3
    rows = {r["model"]: r for r in report["table"]}
    # Same architecture, 8-bit weights instead of 32-bit: the weight payload shrinks 4x, biases stay 32-bit.
    assert rows["uniform 8-bit"]["memory_bits"] < rows["float32 (widest)"]["memory_bits"] / 3
    assert rows["uniform 8-bit"]["params"] == rows["float32 (widest)"]["params"]
    for row in report["table"]:
        assert 0.0 <= row["test"] <= 1.0


@pytest.mark.slow
def test_default_demo_runs_one_shot_udc_searches_that_respect_their_targets(tmp_path, capsys):
    assert main(["demo", "--epochs", "2", "--targets", "0.05,0.2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "found @0.05" in out and "found @0.2" in out and "uniform 8-bit" in out
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["strategy"] == "udc"
    rows = {r["model"]: r for r in report["table"]}
    reference = rows["float32 (widest)"]["memory_bits"]
    assert rows["found @0.05"]["memory_bits"] <= 0.05 * reference
    assert rows["found @0.05"]["memory_bits"] < rows["found @0.2"]["memory_bits"] <= 0.2 * reference
