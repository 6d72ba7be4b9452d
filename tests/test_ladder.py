"""UDC's ``exports``: a search exports cheaper models beside its own, each fine-tuned, written and on the front."""
from __future__ import annotations

import json

import pytest
import torch

from nni_udc.config import parse_config
from nni_udc.experiment import quiet, run_search
from nni_udc.strategies import UDC
from nni_udc.strategies.udc import LADDER_STEP


def _config(tmp_path, exports: int):
    return parse_config({
        "space": {"name": "digits", "args": {"widths": [8, 16], "weight_bits": [2, 8], "sparsity": [0.0, 0.5]}},
        "training": {"epochs": 1, "finetune_epochs": 1},
        "strategy": {"name": "udc", "args": {"candidates": 4, "samples": 30, "parsimony": 1, "exports": exports}},
        "output": str(tmp_path / f"exports{exports}")}, "inline")


@pytest.mark.slow  # two real searches
def test_a_ladder_is_cheaper_step_by_step_within_budget_and_leaves_the_first_export_as_it_was(tmp_path):
    target = 0.2
    with quiet():
        alone = run_search(_config(tmp_path, 1), target=target)
        outcome = run_search(_config(tmp_path, 3), target=target)
    assert alone.ladder == [] and len(outcome.ladder) == 2  # 30 random samples leave room below the first export
    # the first export is the one the search makes alone, trained alike (the ladder draws no random numbers first)
    assert outcome.sample == alone.sample and outcome.costs == alone.costs
    assert (outcome.accuracy, outcome.test_accuracy) == (alone.accuracy, alone.test_accuracy)
    bits = [o.costs["memory_bits"] for o in [outcome] + outcome.ladder]
    assert all(b <= LADDER_STEP * a for a, b in zip(bits, bits[1:])), bits
    assert bits[0] <= target * outcome.reference_costs["memory_bits"]
    assert len({json.dumps(o.sample, sort_keys=True) for o in [outcome] + outcome.ladder}) == 3
    # each a fine-tuned model of its own (not the supernet's modules shared with the first export)
    weights = [{id(p) for p in o.model.parameters()} for o in [outcome] + outcome.ladder]
    assert not weights[0] & weights[1] and not weights[1] & weights[2]
    out = tmp_path / "exports3"
    report = json.loads((out / "report.json").read_text())
    assert report["ladder"] == ["ladder/1", "ladder/2"]
    for k, other in enumerate(outcome.ladder, 1):
        written = json.loads((out / "ladder" / str(k) / "report.json").read_text())
        assert written["sample"] == other.sample and written["test_accuracy"] == other.test_accuracy
        model = torch.load(out / "ladder" / str(k) / "model.pt", weights_only=False)
        assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in other.model.parameters())
    record = outcome.record(number=4, variable="target", value=target, output=out)
    assert [(p.label, p.output) for p in record.points()] == [
        ("4", str(out)), ("4.1", str(out / "ladder" / "1")), ("4.2", str(out / "ladder" / "2"))]
    # a second search into the same directory with one export leaves no ladder of the first behind
    with quiet():
        run_search(_config(tmp_path, 1), target=target, output=out)
    assert not (out / "ladder").exists() and "ladder" not in json.loads((out / "report.json").read_text())


@pytest.mark.parametrize("exports", [0, 1.5, True])
def test_exports_must_be_a_positive_integer(exports):
    with pytest.raises(ValueError, match=rf"exports must be an integer >= 1, but got {exports!r}"):
        UDC(target=0.1, exports=exports)
