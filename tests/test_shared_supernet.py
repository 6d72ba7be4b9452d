"""One supernet for the whole front: trained once per study, every search starts from its weights."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nni_udc.config import load_config
from nni_udc.experiment import quiet, run_pareto


def _config(directory: Path) -> Path:
    path = directory / "exp.yaml"
    path.write_text(f"""\
name: shared
space: {{name: digits, args: {{widths: [8], weight_bits: [2, 8], sparsity: [0.0, 0.5], head_bits: [8]}}}}
training: {{epochs: 1, finetune_epochs: 1}}
strategy: {{name: udc, args: {{candidates: 2, refine: 1}}}}
search: {{target: 0.1}}
pareto: {{trials: 2, low: 0.1, high: 0.3, initial: 2, baseline: false, supernet_epochs: 1}}
output: {directory / 'run'}
""")
    return path


@pytest.mark.slow
def test_a_study_trains_its_supernet_once_and_every_search_starts_from_it(tmp_path):
    quiet()
    config = load_config(_config(tmp_path))
    outcome = run_pareto(config, progress=False)
    supernet = tmp_path / "run" / "supernet.pt"
    assert supernet.exists() and not (tmp_path / "run" / "supernet.pt.partial").exists()
    assert len(outcome.points) == 2
    made = supernet.stat().st_mtime_ns
    saved = torch.load(supernet, weights_only=True)
    assert saved and not any("alpha" in key for key in saved)
    for point in outcome.points:  # every search is within its budget
        report = json.loads((Path(point.output) / "report.json").read_text())
        assert report["relative_cost"] <= report["target"]
        assert report["supernet"] == str(supernet)  # the search started from the shared weights
    # resuming with more searches reuses the supernet: not trained again
    more = load_config(_config(tmp_path))
    more.pareto.trials = 3
    assert len(run_pareto(more, progress=False).points) == 3
    assert supernet.stat().st_mtime_ns == made
