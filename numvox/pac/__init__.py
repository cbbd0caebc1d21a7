"""Pixel-adaptive convolution (PAC): fused forward and backward, 2-D and 3-D, CPU and CUDA."""

from ._api import pac_conv, pac_conv_backward

__all__ = ["pac_conv", "pac_conv_backward"]
