"""Short searches the tests share: one epoch of UDC on random tensors, through NNI's experiment API."""
from __future__ import annotations

from typing import Any

import torch
from nni.nas.evaluator.pytorch import Classification, DataLoader
from nni.nas.experiment import NasExperiment, NasExperimentConfig
from torch import nn
from torch.utils.data import TensorDataset

from nni_udc.strategies import UDC

__all__ = ["udc_search_one_epoch"]


def udc_search_one_epoch(space: Any, input_shape: tuple[int, ...], target: float, where: Any, *,
                         num_classes: int = 10) -> tuple[nn.Module, UDC]:
    """One epoch of UDC on 32 random samples of ``input_shape`` (``num_classes`` classes) under a memory ``target``,
    with NNI's working files under ``where``: the model it exports and the strategy (its ``result``)."""
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, *input_shape), torch.randint(0, num_classes, (32,)))
    evaluator = Classification(train_dataloaders=DataLoader(data, batch_size=16),
                               val_dataloaders=DataLoader(data, batch_size=16), max_epochs=1, num_classes=num_classes,
                               export_onnx=False, accelerator="cpu", enable_progress_bar=False, logger=False,
                               enable_checkpointing=False, enable_model_summary=False)
    strategy = UDC(seed=0, target=target, report_costs=["memory_bits"])
    config = NasExperimentConfig("sequential", "raw")
    config.experiment_working_directory = str(where)
    experiment = NasExperiment(space, evaluator, strategy, config)
    experiment.run(debug=False)
    return experiment.export_top_models(formatter="instance")[0], strategy
