"""The baked model as ONNX in QDQ form: integer weights and quantised activations, as runtimes expect them.

torch's exporter (``torch.onnx.export(..., dynamo=True)``, opset 21) turns the baked model into float ONNX whose
initialisers carry the ``state_dict`` names. :func:`to_qdq` then rewrites it with the ``onnx`` helper API, using
the bake record (:mod:`nni_udc.export.bake`):

- each quantised weight becomes an integer initialiser (``int4`` where every channel has at most 4 bits, else
  ``int8``, ``int16`` above 8) with one scale per output channel and a per-axis ``DequantizeLinear``. The scales are
  the integer form's, so ``DequantizeLinear`` restores the baked weight exactly. A layer with a float channel (32
  bits) stays float;
- each activation quantiser (the bake's ``clamp → div → round → mul``) becomes ``Clip → QuantizeLinear →
  DequantizeLinear`` with its step as scale and zero point 0 (``uint4``/``uint8`` after a ReLU, ``int4``/``int8``
  for signed inputs). ``QuantizeLinear`` rounds half to even like ``torch.round``, so the values are the same.

Example:
    >>> import tempfile, torch, onnx
    >>> from torch import nn
    >>> from nni_udc.export import bake
    >>> from nni_udc.nn import QuantLinear
    >>> net = nn.Sequential(nn.Flatten(), QuantLinear(64, 10, weight_bits=4)).eval()
    >>> with tempfile.TemporaryDirectory() as out:
    ...     path = export_onnx(bake(net, torch.zeros(2, 1, 8, 8)), f"{out}/model.onnx")
    ...     model = onnx.load(path)
    >>> sorted({n.op_type for n in model.graph.node})
    ['DequantizeLinear', 'Gemm', 'Reshape']
    >>> [(i.name, onnx.TensorProto.DataType.Name(i.data_type)) for i in model.graph.initializer if i.name == "1.weight_q"]
    [('1.weight_q', 'INT4')]
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from nni_udc.export.bake import BakedModel
from nni_udc.export.torch_files import export_program

__all__ = ["OPSET", "export_onnx", "to_qdq"]

#: int4/uint4 in QuantizeLinear/DequantizeLinear need opset 21.
OPSET = 21


def _weight_type(bits: list[int]) -> int | None:
    """The ONNX integer type that holds every channel of a weight, or ``None`` when one is float."""
    stored = [b for b in bits if b > 0]
    if not stored or max(stored) >= 32:
        return None
    top = max(stored)
    return TensorProto.INT4 if top <= 4 else TensorProto.INT8 if top <= 8 else TensorProto.INT16


def _activation_type(levels: int, signed: bool) -> int:
    if signed:
        return TensorProto.INT4 if levels <= 7 else TensorProto.INT8 if levels <= 127 else TensorProto.INT16
    return TensorProto.UINT4 if levels <= 15 else TensorProto.UINT8 if levels <= 255 else TensorProto.UINT16


def _constant(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t)
    return None


def _quantize_weights(model: onnx.ModelProto, record: dict[str, Any]) -> list[str]:
    """Replace each quantised weight initialiser by integers, scales and a ``DequantizeLinear``; returns their names."""
    inits = {init.name: init for init in model.graph.initializer}
    done: list[str] = []
    new_nodes = []
    for layer in record["layers"].values():
        for info in layer["tensors"].values():
            name, bits = info["weight"], info["bits"]
            dtype = _weight_type(bits)
            if dtype is None or name not in inits:
                continue
            weight = numpy_helper.to_array(inits[name]).astype(np.float32)
            scales = np.array([s if 0 < b < 32 else 1.0 for s, b in zip(info["scales"], bits)], dtype=np.float32)
            view = (-1,) + (1,) * (weight.ndim - 1)
            levels = np.round(weight / scales.reshape(view))
            if not np.array_equal(levels * scales.reshape(view), weight):
                raise ValueError(f"weight {name!r} is not integers times its scales; was the record written for "
                                 "another model?")
            model.graph.initializer.remove(inits[name])
            model.graph.initializer.extend([
                helper.make_tensor(f"{name}_q", dtype, weight.shape, levels.astype(np.int32).flatten().tolist()),
                numpy_helper.from_array(scales, f"{name}_scale"),
                helper.make_tensor(f"{name}_zero", dtype, scales.shape, [0] * len(scales)),
            ])
            new_nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_scale", f"{name}_zero"],
                                              [name], name=f"{name}_dequantize", axis=0))
            done.append(name)
    for node in reversed(new_nodes):
        model.graph.node.insert(0, node)
    return done


def _quantize_activations(model: onnx.ModelProto, record: dict[str, Any]) -> int:
    """Turn each ``div → round → mul`` of an activation quantiser into ``QuantizeLinear → DequantizeLinear``."""
    acts = [layer["activation"] for layer in record["layers"].values() if layer.get("activation")]
    producer = {out: node for node in model.graph.node for out in node.output}
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    count = 0
    for node in list(model.graph.node):
        if node.op_type != "Round":
            continue
        div = producer.get(node.input[0])
        after = users.get(node.output[0], [])
        if div is None or div.op_type != "Div" or len(after) != 1 or after[0].op_type != "Mul":
            continue
        mul = after[0]
        step, other = _constant(model, div.input[1]), _constant(model, mul.input[1])
        if step is None or other is None or step.size != 1 or not np.array_equal(other, step):
            continue
        act = min(acts, key=lambda a: abs(a["scale"] - float(step)), default=None)
        if act is None or abs(act["scale"] - float(step)) > 1e-6 * act["scale"]:
            continue
        zero = f"{node.name or node.output[0]}_zero"
        dtype = _activation_type(act["levels"], act["signed"])
        model.graph.initializer.append(helper.make_tensor(zero, dtype, [], [0]))
        quantize = helper.make_node("QuantizeLinear", [div.input[0], div.input[1], zero], [f"{node.output[0]}_q"],
                                    name=f"{node.output[0]}_quantize")
        dequantize = helper.make_node("DequantizeLinear", [f"{node.output[0]}_q", div.input[1], zero], [mul.output[0]],
                                      name=f"{node.output[0]}_dequantize")
        at = list(model.graph.node).index(div)
        for old in (div, node, mul):
            model.graph.node.remove(old)
        model.graph.node.insert(at, dequantize)
        model.graph.node.insert(at, quantize)
        count += 1
    return count


def to_qdq(model: onnx.ModelProto, record: dict[str, Any]) -> dict[str, Any]:
    """Rewrite float ONNX of a baked model into QDQ form in place; returns what was quantised."""
    weights = _quantize_weights(model, record)
    activations = _quantize_activations(model, record)
    onnx.checker.check_model(model)
    return {"weights": weights, "activations": activations}


def export_onnx(baked: BakedModel, path: str | Path, *, program: torch.export.ExportedProgram | None = None) -> Path:
    """Write ``baked`` as QDQ ONNX (opset 21, batch size free) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    program = program if program is not None else export_program(baked)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress
        exported = torch.onnx.export(program, dynamo=True, opset_version=OPSET, verbose=False)
    if exported is None:
        raise RuntimeError("torch.onnx.export returned no program")
    model = exported.model_proto
    to_qdq(model, baked.record)
    onnx.save(model, path)
    return path
