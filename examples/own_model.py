"""Bring your own model, start to finish: torchvision's mobilenet_v3_small, made compressible and searched.

The network is torchvision's, built with ``weights=None`` (nothing downloads). The data is scikit-learn's digits,
which ships with the package, upscaled to 3×32×32 so that an ImageNet-style network takes it. A small budget by
default (6 supernet epochs, 6 fine-tune epochs, memory at most 20 % of the float model's).

    .venv/bin/python examples/own_model.py                 # about 3.5 minutes on 2 cores
    .venv/bin/python examples/own_model.py --epochs 10 --target 0.05
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
import torchvision
from nni.nas.evaluator.pytorch import Classification, DataLoader
from nni.nas.experiment import NasExperiment, NasExperimentConfig
from torch.utils.data import TensorDataset

from nni_udc import make_compressible
from nni_udc._table import format_table
from nni_udc.data import load_digits_splits
from nni_udc.evaluators.training import accuracy
from nni_udc.experiment import quiet
from nni_udc.strategies import UDC


def rgb32(split: TensorDataset) -> TensorDataset:
    """8×8 grey digits as 3×32×32 images."""
    x, y = split.tensors
    return TensorDataset(F.interpolate(x, size=32, mode="bilinear").repeat(1, 3, 1, 1), y)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6, help="supernet epochs (weights and architecture)")
    parser.add_argument("--finetune-epochs", type=int, default=6)
    parser.add_argument("--target", type=float, default=0.2, help="memory budget, a fraction of the float model's")
    parser.add_argument("--out", default="runs/own-model", help="NNI's working directory")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    # 1. your network, made searchable: 2/4/8-bit weights and 0/50 % sparsity per layer, ends at 8 bits
    net = torchvision.models.mobilenet_v3_small(weights=None, num_classes=10)
    space = make_compressible(net, weight_bits=[2, 4, 8], sparsity=[0.0, 0.5])
    print(f"mobilenet_v3_small: {len(space.converted)} layers made compressible, {len(space.simplify())} choices")

    # 2. data and an NNI evaluator: weights train on the train split, the architecture on the validation split
    splits = load_digits_splits()
    train, val, test = rgb32(splits.train), rgb32(splits.val), rgb32(splits.test)
    evaluator = Classification(train_dataloaders=DataLoader(train, batch_size=64, shuffle=True),
                               val_dataloaders=DataLoader(val, batch_size=256), max_epochs=args.epochs,
                               learning_rate=0.01, num_classes=10, export_onnx=False, accelerator="cpu",
                               enable_progress_bar=False, logger=False, enable_checkpointing=False,
                               enable_model_summary=False)

    # 3. the one-shot search under a memory budget, then a quantisation-aware fine-tune of what it found
    strategy = UDC(target=args.target, finetune_epochs=args.finetune_epochs, candidates=4, seed=0)
    config = NasExperimentConfig("sequential", "raw")
    config.experiment_working_directory = args.out
    with quiet():
        experiment = NasExperiment(space, evaluator, strategy, config)
        try:
            experiment.run(debug=False)
            model = experiment.export_top_models(formatter="instance")[0]
        finally:
            experiment.stop()
        strategy.finetune()
    result = strategy.result

    # 4. what it costs, against the float model
    rows = [[name, f"{result.reference_costs[name]:,.0f}", f"{value:,.0f}", f"{result.ratio(name):.1f}x"]
            for name, value in sorted(result.costs.items())]
    print(format_table(["cost", "float model", "found model", "smaller by"], rows))
    print(f"validation accuracy {result.accuracy:.3f}, test accuracy {accuracy(model, test):.3f}")
    bits = [v for label, v in result.sample.items() if label.startswith("bits")]
    sparse = [v for label, v in result.sample.items() if label.startswith("sparsity")]
    print(f"weight bits per searched layer: {', '.join(f'{b}-bit x{bits.count(b)}' for b in sorted(set(bits)))}; "
          f"{sum(s > 0 for s in sparse)} of {len(sparse)} layers 50 % sparse")


if __name__ == "__main__":
    main()
