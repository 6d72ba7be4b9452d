"""Model spaces in NNI syntax that use nni-udc's compressible layers."""
from __future__ import annotations

from nni_udc.spaces.digits import DigitsSpace
from nni_udc.spaces.ds_cnn import DsCnnSpace
from nni_udc.spaces.edsr_sr import EdsrSpace
from nni_udc.spaces.mnist1d import Mnist1dSpace
from nni_udc.spaces.mobilenetv2_cifar import MobileNetV2CifarSpace
from nni_udc.spaces.resnet_cifar import ResNetCifarSpace
from nni_udc.spaces.sparse_cell import SparseCellSpace
from nni_udc.spaces.vgg_cifar import VggCifarSpace

__all__ = ["DigitsSpace", "DsCnnSpace", "EdsrSpace", "Mnist1dSpace", "MobileNetV2CifarSpace", "ResNetCifarSpace",
           "SparseCellSpace", "VggCifarSpace"]
