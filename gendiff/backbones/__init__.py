"""Backbones: the neural networks of the reverse process (the interface is in :mod:`.base`)."""

from .base import Backbone
from .unet import UNet

__all__ = ["Backbone", "UNet"]
