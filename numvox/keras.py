"""Keras layers (TensorFlow backend) for the pixel-adaptive convolution: ``PacConv2D``, ``PacConv3D``.

The layers are called on ``[x, guide]``::

    y = numvox.keras.PacConv2D(16, 5, normalize=True)([x, guide])

Forward and backward run numvox's fused kernels through :func:`numvox.tf.pac_conv` (the one
differentiable PAC op, ``tf.custom_gradient`` over ``pac_conv_backward``), so the layers work
eagerly, inside ``tf.function`` and in ``model.fit``; gradients reach ``x``, ``guide``, the
kernel and the bias.  The kernels run where the inputs live (CPU, or CUDA on a GPU; see
:mod:`numvox.tf` for the routes); ``backend="cpu"`` or ``"cuda"`` forces one.  Under a
``mixed_float16`` (or ``mixed_bfloat16``) policy the layer computes in float32 and casts the
result to its compute dtype.  This module imports TensorFlow; ``import numvox`` does not.
"""

import keras
import numpy as np
import tensorflow as tf

from numvox._shared.backend import BACKENDS
from numvox._shared.validate import as_int_tuple, check_number
from numvox.tf import OPS, pac_conv

__all__ = ["PacConv2D", "PacConv3D"]


def _out_shape(x_shape, kernel_size, strides, padding, dilation, filters):
    """Static output shape (None where unknown), from the PAC family's shape rule."""
    weight = list(kernel_size) + [x_shape[-1], filters]
    opts = dict(stride=strides, padding=padding, dilation=dilation)
    dtypes = {n: np.dtype(np.float32) for n in OPS["pac_conv"].arrays}
    shapes = {"x": list(x_shape), "guide": None, "weight": weight, "bias": None}
    (shape, _), = OPS["pac_conv"].output_specs(shapes, dtypes, opts)
    return tf.TensorShape(shape)


class _PacConv(keras.layers.Layer):
    rank = None

    def __init__(self, filters, kernel_size, strides=1, padding="same", dilation_rate=1,
                 normalize=False, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, backend=None, **kwargs):
        super().__init__(**kwargs)
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"backend must be None, 'cpu' or 'cuda'; got {backend!r}")
        self.backend = backend
        d = self.rank
        self.filters = check_number(filters, "filters", minimum=1, integer=True)
        self.kernel_size = as_int_tuple(kernel_size, d, "kernel_size", minimum=1)
        self.strides = as_int_tuple(strides, d, "strides", minimum=1)
        self.dilation_rate = as_int_tuple(dilation_rate, d, "dilation_rate", minimum=1)
        if isinstance(padding, str):
            padding = padding.lower()
            if padding not in ("same", "valid"):
                raise ValueError(f"padding must be 'same', 'valid' or int(s); got {padding!r}")
        else:
            padding = as_int_tuple(padding, d, "padding", minimum=0)
        self.padding = padding
        self.normalize = bool(normalize)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)

    def _split(self, shapes):
        if not isinstance(shapes, (list, tuple)) or len(shapes) != 2:
            raise ValueError(f"{type(self).__name__} is called on [x, guide]; got {shapes!r}")
        return shapes

    def build(self, input_shape):
        x_shape, g_shape = self._split(input_shape)
        d = self.rank
        if len(x_shape) != d + 2 or len(g_shape) != d + 2:
            raise ValueError(
                f"{type(self).__name__} needs x and guide of rank {d + 2} (N, spatial..., channels); "
                f"got {tuple(x_shape)} and {tuple(g_shape)}"
            )
        channels = x_shape[-1]
        if channels is None:
            raise ValueError("the channel axis of x must be known")
        self.kernel = self.add_weight(
            name="kernel", shape=self.kernel_size + (int(channels), self.filters),
            initializer=self.kernel_initializer, regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.filters,), initializer=self.bias_initializer,
                regularizer=self.bias_regularizer, constraint=self.bias_constraint,
            )

    def call(self, inputs):
        x, guide = self._split(inputs)
        high = tf.float64 if self.compute_dtype == "float64" else tf.float32
        kernel = tf.cast(tf.convert_to_tensor(self.kernel), high)
        bias = tf.cast(tf.convert_to_tensor(self.bias), high) if self.use_bias else None
        out = pac_conv(tf.cast(x, high), tf.cast(guide, high), kernel, bias, stride=self.strides,
                       padding=self.padding, dilation=self.dilation_rate, normalize=self.normalize,
                       backend=self.backend)
        return tf.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        x_shape, _ = self._split(input_shape)
        shape = _out_shape(tuple(x_shape), self.kernel_size, self.strides, self.padding,
                           self.dilation_rate, self.filters)
        return tuple(shape.as_list())

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            normalize=self.normalize,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
            bias_regularizer=keras.regularizers.serialize(self.bias_regularizer),
            kernel_constraint=keras.constraints.serialize(self.kernel_constraint),
            bias_constraint=keras.constraints.serialize(self.bias_constraint),
            backend=self.backend,
        )
        return config


@keras.saving.register_keras_serializable(package="numvox")
class PacConv2D(_PacConv):
    """Pixel-adaptive 2-D convolution (Su et al., CVPR 2019), called as ``layer([x, guide])``.

    Parameters
    ----------
    filters : int
        Output channels O.
    kernel_size, strides, dilation_rate : int or 2 ints
    padding : {"same", "valid"} or int or 2 ints
        As :func:`numvox.pac_conv` (``"same"``: ``(k-1)*dilation//2`` before each axis).
    normalize : bool
        Normalise the Gaussian adaptive kernel over each window's in-image taps.
    use_bias : bool
    backend : {None, "cpu", "cuda"}
        None (default) runs where the inputs live; a string forces a backend.
    kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
    kernel_constraint, bias_constraint
        As in ``keras.layers.Conv2D``.

    Inputs ``x`` ``(N, H, W, C)`` and ``guide`` ``(N, H, W, F)``; output ``(N, H', W', filters)``.
    """

    rank = 2


@keras.saving.register_keras_serializable(package="numvox")
class PacConv3D(_PacConv):
    """Pixel-adaptive 3-D convolution; as :class:`PacConv2D` with ``(N, D, H, W, C)`` inputs."""

    rank = 3
