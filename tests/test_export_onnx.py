"""QDQ ONNX of baked models (nni_udc.export.onnx_qdq): integer weights of the right width, quantised activations,
and onnxruntime predicting what the baked torch model predicts on the whole digits test split."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto
from spaces import random_samples

from nni_udc.data import load_dataset
from nni_udc.evaluators.training import train_classifier
from nni_udc.export import bake
from nni_udc.export.onnx_qdq import export_onnx
from nni_udc.spaces import DigitsSpace

SPLITS = load_dataset("digits", seed=0)
TEST_X = SPLITS.test.tensors[0]


def trained(sample_update: dict, seed: int) -> torch.nn.Module:
    space = DigitsSpace(head_bits=(0, 4, 8))
    (sample,) = random_samples(space, 1, seed=seed)
    sample.update(sample_update)
    torch.manual_seed(seed)
    model = space.freeze(sample)
    train_classifier(model, SPLITS, epochs=1, seed=seed)
    return model.eval()


CASES = [
    {"op": "conv", "b_stem": 2, "b_block": 4, "b_down": 8, "head_g0": 0, "head_g1": 4},
    pytest.param({"op": "lowrank", "b_stem": 8, "b_block": 2, "b_down": 4, "head_g0": 8, "head_g1": 8},
                 marks=pytest.mark.slow),
    pytest.param({"op": "sparse", "b_stem": 4, "b_block": 8, "b_down": 2, "head_g0": 4, "head_g1": 0},
                 marks=pytest.mark.slow),
]


@pytest.mark.parametrize("case", CASES)
def test_onnxruntime_predicts_as_the_baked_model(case, tmp_path):
    """~10 s a case: training one epoch, torch.export and the ONNX exporter."""
    model = trained(case, seed=len(case["op"]))
    baked = bake(model, TEST_X[:4])
    path = export_onnx(baked, tmp_path / "model.onnx")
    graph = onnx.load(path).graph
    types = {init.name: init.data_type for init in graph.initializer}
    for layer in baked.record["layers"].values():
        for info in layer["tensors"].values():
            stored = [b for b in info["bits"] if b > 0]
            if max(stored) >= 32:
                assert types[info["weight"]] == TensorProto.FLOAT
            else:  # int4 where every kept channel has at most 4 bits, else int8
                want = TensorProto.INT4 if max(stored) <= 4 else TensorProto.INT8
                assert types[f"{info['weight']}_q"] == want, info["weight"]
    quantised = [layer["activation"] for layer in baked.record["layers"].values() if layer.get("activation")]
    ops = [n.op_type for n in graph.node]
    # inputs of the block (its conv candidate only), down and head: 8-bit, unsigned (they follow a ReLU)
    assert ops.count("QuantizeLinear") == len(quantised) == (3 if case["op"] == "conv" else 2)
    assert "Round" not in ops and "Div" not in ops
    zero_types = {init.data_type for init in graph.initializer if init.name.endswith("_zero") and not init.dims}
    assert zero_types == {TensorProto.UINT8}

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ours = session.run(None, {session.get_inputs()[0].name: TEST_X.numpy()})[0]
    with torch.no_grad():
        reference = baked.module(TEST_X).numpy()
    # onnxruntime sums a conv in another order than torch: a value exactly between two activation levels (common:
    # quantised weights times quantised inputs lie on a grid) may round to the other one, one step of the next
    # layer's input (measured on these cases: 0 to 2 of 359 argmaxes differ, all near ties, max difference 4e-3)
    print(f"agreement {(ours.argmax(1) == reference.argmax(1)).mean():.4f}, max |diff| {np.abs(ours - reference).max():.2e}")
    assert (ours.argmax(1) == reference.argmax(1)).mean() >= 0.99
    assert np.abs(ours - reference).max() < 2e-2
    one = session.run(None, {session.get_inputs()[0].name: TEST_X[:1].numpy()})[0]  # the batch size is free
    assert one.shape == (1, 10)


def test_to_qdq_refuses_a_record_of_another_model(tmp_path):
    from nni_udc.export.onnx_qdq import to_qdq

    model = trained(CASES[0], seed=4)
    baked = bake(model, TEST_X[:4])
    path = export_onnx(baked, tmp_path / "model.onnx")
    float_model = onnx.load(path)
    other = bake(trained(CASES[0], seed=5), TEST_X[:4]).record
    # the QDQ model's head weight is integers now: give it a float one that no record's scales explain
    for init in list(float_model.graph.initializer):
        if init.name == "head.weight_q":
            weights = onnx.numpy_helper.from_array(baked.module.head.weight.detach().numpy() * 1.37, "head.weight")
            float_model.graph.initializer.append(weights)
    with pytest.raises(ValueError, match="'head.weight' is not integers times its scales"):
        to_qdq(float_model, {"layers": {"head": other["layers"]["head"]}})
