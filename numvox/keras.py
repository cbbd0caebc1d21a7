"""Keras layers (TensorFlow backend) for the pixel-adaptive convolution: ``PacConv2D``, ``PacConv3D``.

The layers are called on ``[x, guide]``::

    y = numvox.keras.PacConv2D(16, 5, normalize=True)([x, guide])

Forward and backward run numvox's fused kernels on the host through ``tf.numpy_function``
inside ``tf.custom_gradient``, so the layers work eagerly, inside ``tf.function`` and in
``model.fit``; gradients reach ``x``, ``guide``, the kernel and the bias.  Under a
``mixed_float16`` (or ``mixed_bfloat16``) policy the layer computes in float32 and casts the
result to its compute dtype.  This module imports TensorFlow; ``import numvox`` does not.
"""

import numpy as np
import tensorflow as tf
import keras

from .pac._api import geometry, pac_conv, pac_conv_backward

__all__ = ["PacConv2D", "PacConv3D", "pac_conv_tf"]


def _norm_tuple(value, d, name):
    if isinstance(value, (int, np.integer)):
        return (int(value),) * d
    value = tuple(int(v) for v in value)
    if len(value) != d:
        raise ValueError(f"{name} must be an int or {d} ints; got {value!r}")
    return value


def _out_shape(x_shape, k, strides, padding, dilation, filters):
    """Static output shape (None where unknown)."""
    spatial = list(x_shape[1:-1])
    if any(s is None for s in spatial):
        return tf.TensorShape([x_shape[0]] + [None] * len(spatial) + [filters])
    _, _, _, out_sp = geometry(tuple(spatial), k, strides, padding, dilation)
    return tf.TensorShape([x_shape[0], *out_sp, filters])


def pac_conv_tf(x, guide, kernel, bias=None, *, strides=1, padding="same", dilation_rate=1,
                normalize=False):
    """Differentiable TensorFlow op: :func:`numvox.pac_conv` with gradients through
    :func:`numvox.pac_conv_backward`.  Inputs are cast to float32 (float64 stays float64);
    the result has that dtype."""
    dtype = tf.float64 if any(t is not None and t.dtype == tf.float64 for t in (x, guide, kernel, bias)) else tf.float32
    x = tf.cast(x, dtype)
    guide = tf.cast(guide, dtype)
    kernel = tf.cast(kernel, dtype)
    use_bias = bias is not None
    bias = tf.cast(bias, dtype) if use_bias else tf.zeros([kernel.shape[-1]], dtype)
    d = len(kernel.shape) - 2
    k = tuple(int(s) for s in kernel.shape[:d])
    strides = _norm_tuple(strides, d, "strides")
    dilation = _norm_tuple(dilation_rate, d, "dilation_rate")
    opts = dict(stride=strides, padding=padding, dilation=dilation, normalize=bool(normalize), backend="cpu")
    np_dtype = dtype.as_numpy_dtype
    out_static = _out_shape(x.shape, k, strides, padding, dilation, int(kernel.shape[-1]))

    def _forward(xv, gv, wv, bv):
        return np.asarray(pac_conv(xv, gv, wv, bv if use_bias else None, **opts), dtype=np_dtype)

    def _backward(dy, xv, gv, wv):
        grads = pac_conv_backward(dy, xv, gv, wv, **opts)
        return tuple(np.asarray(g, dtype=np_dtype) for g in grads)

    @tf.custom_gradient
    def op(x, guide, kernel, bias):
        out = tf.numpy_function(_forward, [x, guide, kernel, bias], dtype, stateful=False)
        out.set_shape(out_static)

        def grad(dy):
            gx, gg, gw, gb = tf.numpy_function(_backward, [tf.cast(dy, dtype), x, guide, kernel],
                                               [dtype] * 4, stateful=False)
            gx.set_shape(x.shape)
            gg.set_shape(guide.shape)
            gw.set_shape(kernel.shape)
            gb.set_shape(bias.shape)
            return gx, gg, gw, gb

        return out, grad

    return op(x, guide, kernel, bias)


class _PacConv(keras.layers.Layer):
    rank = None

    def __init__(self, filters, kernel_size, strides=1, padding="same", dilation_rate=1,
                 normalize=False, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(**kwargs)
        d = self.rank
        self.filters = int(filters)
        if self.filters < 1:
            raise ValueError(f"filters must be >= 1; got {filters!r}")
        self.kernel_size = _norm_tuple(kernel_size, d, "kernel_size")
        self.strides = _norm_tuple(strides, d, "strides")
        self.dilation_rate = _norm_tuple(dilation_rate, d, "dilation_rate")
        if isinstance(padding, str):
            padding = padding.lower()
            if padding not in ("same", "valid"):
                raise ValueError(f"padding must be 'same', 'valid' or int(s); got {padding!r}")
        else:
            padding = _norm_tuple(padding, d, "padding")
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
        out = pac_conv_tf(tf.cast(x, high), tf.cast(guide, high), kernel, bias, strides=self.strides,
                          padding=self.padding, dilation_rate=self.dilation_rate, normalize=self.normalize)
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
