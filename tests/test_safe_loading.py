"""Model files are read with weights_only=True (nni_udc.export.load): a hostile pickle is refused before any of it
runs, a file that is not a model of ours gets one line and status 2, and search runs write the baked model."""
from __future__ import annotations

import json

import pytest
import torch
from spaces import random_samples
from torch import nn

from nni_udc.cli import main
from nni_udc.export.load import ModelFileError, load_model
from nni_udc.nn import QuantConv2d, QuantLinear
from nni_udc.spaces import DigitsSpace


class CreatesAFile:
    """A pickle whose loading would create ``path`` (``open(path, 'w')``): code run by unpickling."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("command", [["npu-size"], ["export", "--input-shape", "1,8,8"]])
def test_a_hostile_pickle_is_refused_and_never_runs(command, tmp_path, capsys):
    victim = tmp_path / "created-by-the-pickle"
    torch.save(CreatesAFile(str(victim)), tmp_path / "model.pt")
    with pytest.raises(SystemExit) as exit_info:
        main([command[0], str(tmp_path / "model.pt"), *command[1:]])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "refused" in err and "io.open" in err, err
    assert not victim.exists()


@pytest.mark.parametrize("content, says", [
    ("text", "is not a torch model file"),
    ("state_dict", "holds a state_dict"),
    ("missing", "no such file"),
    ("empty directory", "holds no model.pt"),
])
def test_a_file_that_is_not_a_model_of_ours_gets_one_line_and_status_2(content, says, tmp_path, capsys):
    path = tmp_path / "model.pt"
    if content == "text":
        path.write_text("not a model")
    elif content == "state_dict":
        torch.save(nn.Linear(2, 2).state_dict(), path)
    elif content == "empty directory":
        path = tmp_path
    with pytest.raises(SystemExit) as exit_info:
        main(["npu-size", str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and says in err, err


def test_models_of_our_spaces_load_with_weights_only(tmp_path):
    space = DigitsSpace()
    (sample,) = random_samples(space, 1, seed=2)
    model = space.freeze(sample).eval()
    torch.save(model, tmp_path / "model.pt")  # as nni-udc search writes model.pt
    loaded = load_model(tmp_path)  # a run directory: its model.pt
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    torch.save(nn.Sequential(QuantConv2d(1, 4, 3, weight_bits=4), nn.Flatten(), QuantLinear(144, 2)),
               tmp_path / "plain.pt")
    assert isinstance(load_model(tmp_path / "plain.pt")[2], QuantLinear)


class UserNet(nn.Module):  # a class of the user's own script: its code is not ours to run
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)


def test_a_model_of_another_package_is_refused_naming_its_class(tmp_path):
    torch.save(UserNet(), tmp_path / "model.pt")
    with pytest.raises(ModelFileError, match="test_safe_loading.UserNet"):
        load_model(tmp_path / "model.pt")


def test_search_runs_write_the_baked_model_beside_model_pt(tmp_path):
    from nni_udc.experiment import _write_baked
    from nni_udc.export import bake
    from nni_udc.nn import ActivationQuantizer

    space = DigitsSpace()
    (sample,) = random_samples(space, 1, seed=4)
    model = space.freeze(sample).eval()
    for m in model.modules():
        if isinstance(m, ActivationQuantizer):  # as training sets them
            m.initialized.fill_(True)
    files = _write_baked(model, tmp_path, (1, 8, 8))
    assert files == {"state_dict": "model.state_dict.pt", "record": "model.record.json", "pt2": "model.pt2"}
    state = torch.load(tmp_path / "model.state_dict.pt", weights_only=True)
    assert set(json.loads((tmp_path / "model.record.json").read_text())["state_dict"]) == set(state)
    program = torch.export.load(tmp_path / "model.pt2").module()
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(program(x), bake(model, x[:2]).module(x))
        assert torch.allclose(bake(model, x[:2], scale_bits=32).module(x), model(x), atol=1e-4)
    untrained = space.freeze(sample)  # clips never set: the search keeps its files, the report says why
    assert "never set by training" in _write_baked(untrained, tmp_path / "untrained", (1, 8, 8))["error"]
