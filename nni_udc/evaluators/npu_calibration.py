"""Fit the Ethos-U weight-size model (:mod:`nni_udc.evaluators.npu`) to Arm's encoder, and measure its error.

Layer shapes come from real edge networks (torchvision MobileNetV2, MobileNetV3-small and ResNet-18 built with
``weights=None``, and the DS-CNN keyword-spotting network of :func:`ds_cnn`) and from a few synthetic shapes for
what those lack (grouped convs, more tiny layers). Each case draws weights from a seeded mix of Gaussian,
Laplace and trained-like ones (Student-t with per-channel scales), prunes the layer's smallest magnitudes and
quantises per output channel, symmetric and narrow-range, as ``nni_udc/functional/quant.py`` does; the truth
is :func:`~nni_udc.evaluators.npu.encoded_layer_bytes` (the real encoder, Vela's traversal, biases and scales).

MobileNetV2, ResNet-18 and the ``TRAIN_SHAPES`` calibrate; MobileNetV3-small, the DS-CNN and ``HELD_OUT_SHAPES``
are held out. The model is linear in its table values, so :func:`fit` is a weighted least-squares fit of
relative error, with a small smoothness penalty for table cells no layer reaches.

    .venv/bin/python scripts/calibrate_ethos_u.py            # error tables of the shipped model
    .venv/bin/python scripts/calibrate_ethos_u.py --write    # refit, write the target files, then the tables
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from nni_udc.evaluators.npu import (
    BITS,
    OUT_CHANNEL_STEP,
    SCALE_BYTES_PER_CHANNEL,
    TRAVERSALS,
    encoded_layer_bytes,
    hat_weights,
    stored_weights_per_channel,
    vela_traversal,
)
from nni_udc.evaluators.spec import LayerSpec

__all__ = ["FAMILIES", "HELD_OUT_NETWORKS", "TRAIN_NETWORKS", "Case", "Shape", "ds_cnn", "family_errors", "fit",
           "measure", "network_errors", "network_shapes", "sample_weights", "spearman", "unique",
           "write_target"]

FAMILIES = ("depthwise", "grouped", "pointwise", "k×k", "linear", "tiny")
TINY = 1000  # weights: under this a layer is "tiny" (its stream overheads are a large part of it)
TRAIN_NETWORKS = ("mobilenet_v2", "resnet18")
HELD_OUT_NETWORKS = ("mobilenet_v3_small", "ds_cnn")
DENSITY_KNOTS = [0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0]
FAN_IN_KNOTS = [1, 4, 9, 16, 25, 48, 96, 192, 384, 768, 1536, 3072, 4608]


@dataclass(frozen=True)
class Shape:
    """One weight layer's shape: ``kind`` 'conv' or 'linear', ``in_channels`` in total (not per group)."""

    network: str
    kind: str
    out: int
    in_channels: int
    kernel: tuple[int, int] = (1, 1)
    groups: int = 1

    @property
    def in_per_group(self) -> int:
        return self.in_channels // self.groups

    @property
    def fan_in(self) -> int:
        return self.in_per_group * self.kernel[0] * self.kernel[1]

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.in_per_group == 1

    @property
    def traversal(self) -> str:
        return vela_traversal(self.in_per_group, self.kernel[0] * self.kernel[1], depthwise=self.depthwise,
                              linear=self.kind == "linear")

    def families(self) -> list[str]:
        if self.kind == "linear":
            out = ["linear"]
        elif self.depthwise:
            out = ["depthwise"]
        elif self.groups > 1:
            out = ["grouped"]
        else:
            out = ["pointwise" if self.kernel == (1, 1) else "k×k"]
        return out + (["tiny"] if self.out * self.fan_in < TINY else [])

    def spec(self, bits: int, density: float) -> LayerSpec:
        return LayerSpec(self.network, self.kind, self.in_channels, self.out, self.kernel, self.groups,
                         weight_bits=bits, density=density)


def ds_cnn() -> nn.Module:
    """The DS-CNN (S) keyword-spotting network of Zhang et al., "Hello Edge", on 49×10 MFCC features."""
    layers: list[nn.Module] = [nn.Conv2d(1, 64, (10, 4), stride=2, padding=(5, 1)), nn.BatchNorm2d(64), nn.ReLU()]
    for _ in range(4):
        layers += [nn.Conv2d(64, 64, 3, padding=1, groups=64), nn.BatchNorm2d(64), nn.ReLU(),
                   nn.Conv2d(64, 64, 1), nn.BatchNorm2d(64), nn.ReLU()]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 12)]
    return nn.Sequential(*layers)


def network_shapes(name: str) -> list[Shape]:
    """Every Conv2d and Linear of a network, in order, repeats included (a whole network's layers)."""
    if name == "ds_cnn":
        model = ds_cnn()
    else:
        import torchvision

        model = getattr(torchvision.models, name)(weights=None)
    out = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            out.append(Shape(name, "conv", module.out_channels, module.in_channels, (kh, kw), module.groups))
        elif isinstance(module, nn.Linear):
            out.append(Shape(name, "linear", module.out_features, module.in_features))
    return out


def unique(shapes: Iterable[Shape]) -> list[Shape]:
    """Each shape once (the first network that has it names it)."""
    seen: dict[tuple, Shape] = {}
    for s in shapes:
        seen.setdefault((s.kind, s.out, s.in_channels, s.kernel, s.groups), s)
    return list(seen.values())


def _synthetic(rows: Sequence[tuple]) -> list[Shape]:
    return [Shape("synthetic", kind, out, cin, (k, k) if isinstance(k, int) else k, g) for kind, out, cin, k, g in rows]


#: Shapes the real networks lack: grouped convs, wider depthwise kernels, more tiny and odd layers.
TRAIN_SHAPES = _synthetic([
    ("conv", 128, 128, 3, 32), ("conv", 256, 256, 3, 32), ("conv", 64, 64, 1, 4), ("conv", 96, 96, 1, 3),
    ("conv", 48, 48, 3, 2), ("conv", 96, 96, 7, 96), ("conv", 8, 8, 3, 8), ("conv", 24, 24, 5, 24),
    ("conv", 8, 1, 3, 1), ("conv", 16, 3, 3, 1), ("conv", 8, 4, 1, 1), ("conv", 16, 8, 3, 1), ("conv", 12, 6, 3, 1),
    ("linear", 10, 64, 1, 1), ("linear", 12, 144, 1, 1), ("linear", 32, 16, 1, 1), ("linear", 100, 256, 1, 1),
    ("linear", 4, 32, 1, 1), ("conv", 32, 32, 3, 1), ("conv", 24, 16, 5, 1),
])
HELD_OUT_SHAPES = _synthetic([
    ("conv", 64, 64, 3, 8), ("conv", 240, 240, 1, 3), ("conv", 512, 512, 3, 32), ("conv", 32, 32, 3, 16),
    ("conv", 6, 1, 5, 1), ("conv", 10, 8, 1, 1), ("conv", 40, 40, 3, 40), ("linear", 20, 40, 1, 1),
    ("conv", 12, 6, 1, 1), ("conv", 48, 24, 3, 1),
])


def sample_weights(shape: Shape, bits: int, density: float, rng: np.random.Generator) -> np.ndarray:
    """Int8 weights ``(out, kh, kw, in/groups)`` of ``shape``: each output channel Gaussian, Laplace or trained-like
    (Student-t with 3 degrees of freedom, at a log-normal scale), the smallest magnitudes of the whole layer
    pruned to ``density``, then quantised per output channel to ``bits``.

    A layer drawn from one distribution alone encodes tens of percent away from this mix at 4 bits (Laplace
    weights survive rounding more often, trained-like ones less): the model, which cannot see the weights,
    predicts the mix."""
    size = (shape.out, shape.kernel[0], shape.kernel[1], shape.in_per_group)
    kind = rng.integers(3, size=(shape.out, 1, 1, 1))  # each output channel draws its own distribution
    trained_like = rng.standard_t(3, size=size) * rng.lognormal(0.0, 0.5, size=(shape.out, 1, 1, 1))
    w = np.where(kind == 0, rng.standard_normal(size), np.where(kind == 1, rng.laplace(size=size), trained_like))
    flat = np.abs(w).ravel()
    zeros = int(round((1 - density) * flat.size))
    if zeros:
        w[np.abs(w) <= np.partition(flat, zeros - 1)[zeros - 1]] = 0.0
    q = 2 ** (min(bits, 8) - 1) - 1
    scale = np.abs(w).reshape(shape.out, -1).max(1).clip(1e-12) / q
    return np.clip(np.round(w / scale[:, None, None, None]), -q, q).astype(np.int8)


@dataclass(frozen=True)
class Case:
    """One encoded layer: its shape, bits, nominal density, the encoder's bytes and the non-zero fraction."""

    shape: Shape
    bits: int
    density: float
    truth: int
    nonzero: float


def measure(shapes: Sequence[Shape], bits: Sequence[int], sparsities: Sequence[float], accelerator: str,
            seed: int) -> list[Case]:
    """Every shape × bits × sparsity encoded once with fresh weights."""
    rng = np.random.default_rng(seed)
    cases = []
    for shape in shapes:
        for b in bits:
            for sparsity in sparsities:
                w = sample_weights(shape, b, 1 - sparsity, rng)
                truth = encoded_layer_bytes(w, accelerator, depthwise=shape.depthwise, linear=shape.kind == "linear")
                cases.append(Case(shape, b, 1 - sparsity, truth, float(np.count_nonzero(w)) / w.size))
    return cases


def _smoothness(n_rows: int, n_cols: int, weight: float) -> np.ndarray:
    """Rows penalising the second differences of an ``n_rows × n_cols`` table (flattened row-major)."""
    rows = []
    for i in range(n_rows):
        for j in range(n_cols - 2):
            r = np.zeros(n_rows * n_cols)
            r[i * n_cols + j: i * n_cols + j + 3] = (1, -2, 1)
            rows.append(r)
    for j in range(n_cols):
        for i in range(n_rows - 2):
            r = np.zeros(n_rows * n_cols)
            r[[i * n_cols + j, (i + 1) * n_cols + j, (i + 2) * n_cols + j]] = (1, -2, 1)
            rows.append(r)
    return weight * np.array(rows)


def fit(cases: Sequence[Case], *, smooth: float = 0.02, power: float = 1.0) -> dict[str, Any]:
    """Coefficients of the model fitted to ``cases`` (they must cover every bit-width of the tables)."""
    dk, fk = DENSITY_KNOTS, FAN_IN_KNOTS
    n_d, n_f = len(dk), len(fk)
    # 1. the share of the pruned weights that survives rounding, per bit-width, over density and fan-in
    kept: dict[int, list[list[float]]] = {}
    for b in BITS:
        mine = [c for c in cases if c.bits == b]
        a = np.array([np.outer(hat_weights(dk, c.density), hat_weights(fk, c.shape.fan_in)).ravel() for c in mine])
        y = np.array([c.nonzero / c.density for c in mine])
        a = np.vstack([a, _smoothness(n_d, n_f, 0.05)])
        y = np.concatenate([y, np.zeros(len(a) - len(y))])
        solution = np.clip(np.linalg.lstsq(a, y, rcond=None)[0], 0.0, 1.0)
        kept[b] = [[round(float(v), 5) for v in solution[r * n_f:(r + 1) * n_f]] for r in range(n_d)]

    def d_eff(c: Case) -> float:
        table = [np.interp(c.shape.fan_in, fk, row) for row in kept[c.bits]]
        return c.density * float(np.interp(c.density, dk, table))

    # 2. per traversal: bytes-per-weight tables of every bit-width and one per-layer constant, least squares on
    #    the relative error of the whole layer's bytes (scales are exact: 10 bytes per channel)
    tables: dict[str, dict[int, list[list[float]]]] = {}
    layer: dict[str, float] = {}
    block = n_d * n_f
    for traversal in TRAVERSALS:
        mine = [c for c in cases if c.shape.traversal == traversal]
        a = np.zeros((len(mine), len(BITS) * block + 1))
        y = np.zeros(len(mine))
        for row, c in enumerate(mine):
            w = 1.0 / c.truth ** power
            n, out = c.shape.fan_in, c.shape.out
            stored = stored_weights_per_channel(traversal, c.shape.in_per_group, c.shape.kernel[0] * c.shape.kernel[1])
            cell = out * stored * np.outer(hat_weights(dk, d_eff(c) * n / stored), hat_weights(fk, n)).ravel()
            if traversal == "depth_first":  # the all-zero channels up to a multiple of 8
                padding = -out % OUT_CHANNEL_STEP
                cell += padding * stored * np.outer(hat_weights(dk, 0.0), hat_weights(fk, n)).ravel()
            at = BITS.index(c.bits) * block
            a[row, at: at + block] = w * cell
            a[row, -1] = w
            y[row] = w * (c.truth - SCALE_BYTES_PER_CHANNEL * c.shape.out)
        penalty = _smoothness(n_d, n_f, smooth)
        blocks = [np.hstack([np.zeros((len(penalty), i * block)), penalty,
                             np.zeros((len(penalty), (len(BITS) - 1 - i) * block + 1))]) for i in range(len(BITS))]
        a = np.vstack([a, *blocks])
        y = np.concatenate([y, np.zeros(len(a) - len(y))])
        solution = np.linalg.lstsq(a, y, rcond=None)[0]
        tables[traversal] = {b: [[round(float(v), 5) for v in solution[i * block + r * n_f: i * block + (r + 1) * n_f]]
                                 for r in range(n_d)] for i, b in enumerate(BITS)}
        layer[traversal] = round(float(solution[-1]), 2)
    return {"density_knots": dk, "fan_in_knots": fk, "kept_after_rounding": kept, "bytes_per_weight": tables,
            "layer_bytes": layer}


Cost = Callable[[LayerSpec], Any]


def _relative(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return (predicted - truth) / truth


def family_errors(cost: Cost, cases: Sequence[Case]) -> dict[str, dict[str, float]]:
    """Per family: cases, total error (signed), median and worst per-layer error (absolute), and all layers."""
    out = {}
    predicted = np.array([float(cost(c.shape.spec(c.bits, c.density))) for c in cases])
    truth = np.array([c.truth for c in cases], dtype=float)
    groups = {f: [i for i, c in enumerate(cases) if f in c.shape.families()] for f in FAMILIES}
    groups["all layers"] = list(range(len(cases)))
    for name, index in groups.items():
        if not index:
            continue
        p, t = predicted[index], truth[index]
        error = np.abs(_relative(p, t))
        out[name] = {"cases": len(index), "total": float(p.sum() / t.sum() - 1), "median": float(np.median(error)),
                     "worst": float(error.max()), "spearman": spearman(p, t)}
    return out


def network_errors(cost: Cost, networks: Sequence[str], bits: Sequence[int], sparsities: Sequence[float],
                   accelerator: str, seed: int) -> list[dict[str, Any]]:
    """Whole networks: every layer at ``bits`` and ``sparsity``, model total against the encoder's total."""
    rng = np.random.default_rng(seed)
    rows = []
    for name in networks:
        shapes = network_shapes(name)
        for b in bits:
            for sparsity in sparsities:
                truth = predicted = 0.0
                for shape in shapes:
                    w = sample_weights(shape, b, 1 - sparsity, rng)
                    truth += encoded_layer_bytes(w, accelerator, depthwise=shape.depthwise,
                                                 linear=shape.kind == "linear")
                    predicted += float(cost(shape.spec(b, 1 - sparsity)))
                rows.append({"network": name, "bits": b, "sparsity": sparsity, "truth": truth,
                             "model": predicted, "error": predicted / truth - 1})
    return rows


def spearman(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    def ranks(values: Sequence[float] | np.ndarray) -> np.ndarray:
        x = np.asarray(values, dtype=float)
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x), dtype=float)
        for value in np.unique(x):  # ties share their mean rank
            same = x == value
            if same.sum() > 1:
                r[same] = r[same].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def calibration_cases(accelerator: str, seed: int = 0) -> list[Case]:
    """The fitting set: the training networks' shapes and ``TRAIN_SHAPES``, at every bit-width of the tables."""
    shapes = unique([s for n in TRAIN_NETWORKS for s in network_shapes(n)] + TRAIN_SHAPES)
    return measure(shapes, BITS, (0.0, 0.25, 0.5, 0.75, 0.9), accelerator, seed)


def timed(label: str, fn: Callable[[], Any]) -> Any:
    """``fn()``, printing how long it took."""
    start = time.perf_counter()
    out = fn()
    print(f"# {label}: {time.perf_counter() - start:.0f} s", flush=True)
    return out


_HEADER = """\
# Arm {product} NPU: bytes of a layer's weight stream after the NPU's weight compression (weights, biases, scales).
# Search: an analytic model (nni_udc/evaluators/npu.py) fitted to Arm's own encoder, ethosu.vela.api.npu_encode_weights
# (ethos-u-vela {vela}, {accelerator}), on layer shapes of MobileNetV2, ResNet-18 and synthetic ones; frozen models
# (exact_costs, reports, fronts) are measured with the encoder itself. Refit and print the errors per layer family
# and per whole network (held out: MobileNetV3-small, DS-CNN) with:
#   .venv/bin/python scripts/calibrate_ethos_u.py --target {name} --write
name: {name}
description: weight memory of an Arm {product} NPU after hardware weight compression, plus the generic costs
optimise: npu_weight_bytes
costs:
  npu_weight_bytes:
    kind: npu_weights
    unit: bytes
    accelerator: {name}
    source: "frozen models: Arm's Ethos-U encoder (ethos-u-vela); search: an analytic model fitted to it"
"""
_GENERIC = """\
  params: {kind: builtin, cost: params, unit: count, source: "weights and biases of kept output channels"}
  macs: {kind: builtin, cost: macs, unit: MACs, source: "dense multiply-accumulates per input sample"}
  memory_bits: {kind: builtin, cost: memory_bits, unit: bits, source: "generic compressed weight memory"}
"""


def write_target(path: Path, name: str, coefficients: dict[str, Any]) -> None:
    """Write the target file of accelerator ``name`` with fitted ``coefficients`` (the generic costs after them
    are kept from the file there, if any)."""
    from importlib.metadata import version

    import yaml

    from nni_udc.registry import ACCELERATORS

    tail = _GENERIC
    if path.is_file():
        text = path.read_text()
        if "\n  params:" in text:
            tail = text[text.index("\n  params:") + 1:]
    body = yaml.safe_dump({"coefficients": coefficients}, sort_keys=False, default_flow_style=None, width=120)
    head = _HEADER.format(name=name, product=f"Ethos-U{name[-2:]}", accelerator=ACCELERATORS[name],
                          vela=version("ethos-u-vela"))
    path.write_text(head + "".join(f"    {line}\n" for line in body.splitlines()) + tail)
