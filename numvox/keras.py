"""Keras layers (TensorFlow backend) for the pixel-adaptive convolution and its family:
``PacConv2D``/``3D``, ``PacConvTranspose2D``/``3D`` (guided upsampling) and ``PacPool2D``/``3D``.

The layers are called on ``[x, guide]``::

    y = numvox.keras.PacConv2D(16, 5, normalize=True)([x, guide])
    up = numvox.keras.PacConvTranspose2D(16, 4, strides=2, padding=1)([y, guide_hr])

Forward and backward run numvox's fused kernels through the differentiable ops of
:mod:`numvox.tf` (``tf.custom_gradient`` over the ``*_backward`` functions), so the layers work
eagerly, inside ``tf.function`` and in ``model.fit``; gradients reach ``x``, ``guide``, the
kernel and the bias, and an inverse adaptive kernel's alpha and lambda (the weights
``kernel_alpha`` and ``kernel_lambda``, unless the kind ends in ``_fixed``).  The kernels run
where the inputs live (CPU, or CUDA on a GPU; see :mod:`numvox.tf` for the routes);
``backend="cpu"`` or ``"cuda"`` forces one.  Under a ``mixed_float16`` (or ``mixed_bfloat16``)
policy the layer computes in float32 and casts the result to its compute dtype.  This module
imports TensorFlow; ``import numvox`` does not.
"""

import keras
import numpy as np
import tensorflow as tf

from numvox._shared.backend import BACKENDS
from numvox._shared.validate import as_int_tuple, check_number
from numvox.tf import OPS, pac_conv, pac_conv_transpose, pac_pool

__all__ = ["PacConv2D", "PacConv3D", "PacConvTranspose2D", "PacConvTranspose3D", "PacPool2D", "PacPool3D"]


def _out_shape(op, x_shape, kernel_size, filters, opts):
    """Static output shape (None where unknown), from the PAC family's shape rule of ``op``."""
    dtypes = {n: np.dtype(np.float32) for n in OPS[op].arrays}
    shapes = {"x": list(x_shape), "guide": None, "weight": list(kernel_size) + [x_shape[-1], filters],
              "bias": None}
    (shape, _), = OPS[op].output_specs(shapes, dtypes, {**opts, "kernel_size": kernel_size})
    return tf.TensorShape(shape)


def _check_kernel(kernel):
    """The ``kernel`` option: a kernel name of :func:`numvox.pac.parse_kernel`."""
    from numvox.pac import parse_kernel

    parse_kernel(kernel)
    return kernel


def _add_kernel_weights(layer):
    """An inverse kernel without ``_fixed`` (pacnet's learned ``inv_alpha``/``inv_lambda``):
    two trainable scalar weights ``kernel_alpha`` and ``kernel_lambda``, initialised from the
    kernel's name, in the layer's variable dtype and never autocast (float32 under mixed
    precision).  Gaussian and ``_fixed`` kinds: none (both attributes None)."""
    from numvox.pac import parse_kernel

    kind, alpha, lam, _, fixed = parse_kernel(layer.kernel_kind)
    layer.kernel_alpha = layer.kernel_lambda = None
    if kind == "inv" and not fixed:
        layer.kernel_alpha, layer.kernel_lambda = (
            layer.add_weight(name=name, shape=(), initializer=keras.initializers.Constant(value), autocast=False)
            for name, value in (("kernel_alpha", alpha), ("kernel_lambda", lam))
        )


def _kernel_params(layer):
    """``[alpha, lambda]`` of the layer's trainable kernel weights as one tensor, or None."""
    if layer.kernel_alpha is None:
        return None
    return tf.stack([tf.convert_to_tensor(layer.kernel_alpha), tf.convert_to_tensor(layer.kernel_lambda)])


def _pair(layer, shapes):
    if not isinstance(shapes, (list, tuple)) or len(shapes) != 2:
        raise ValueError(f"{type(layer).__name__} is called on [x, guide]; got {shapes!r}")
    return shapes


def _check_ranks(layer, x_shape, g_shape):
    d = layer.rank
    if len(x_shape) != d + 2 or len(g_shape) != d + 2:
        raise ValueError(
            f"{type(layer).__name__} needs x and guide of rank {d + 2} (N, spatial..., channels); "
            f"got {tuple(x_shape)} and {tuple(g_shape)}"
        )


def _check_guide_size(layer, x_shape, g_shape, out_shape):
    """A guide whose known spatial size differs from the output's (transposed) or the
    input's (conv, pool): a clear error naming both shapes."""
    want = tuple(out_shape)[1:-1]
    got = tuple(g_shape)[1:-1]
    if any(a is not None and b is not None and a != b for a, b in zip(got, want)):
        raise ValueError(
            f"{type(layer).__name__}: guide has shape {tuple(g_shape)} but its spatial size must be {want} "
            f"(x has shape {tuple(x_shape)})"
        )


class _PacConv(keras.layers.Layer):
    rank = None

    op = "pac_conv"

    def __init__(self, filters, kernel_size, strides=1, padding="same", dilation_rate=1,
                 normalize=False, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, backend=None, kernel="gaussian", **kwargs):
        super().__init__(**kwargs)
        self.kernel_kind = _check_kernel(kernel)
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"backend must be None, 'cpu' or 'cuda'; got {backend!r}")
        self.backend = backend
        d = self.rank
        self.filters = check_number(filters, "filters", minimum=1, integer=True)
        self.kernel_size = as_int_tuple(kernel_size, d, "kernel_size", minimum=1)
        self.strides = as_int_tuple(strides, d, "strides", minimum=1)
        self.dilation_rate = as_int_tuple(dilation_rate, d, "dilation_rate", minimum=1)
        self.padding = self._check_padding(padding)
        self.normalize = bool(normalize)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)

    def _check_padding(self, padding):
        if isinstance(padding, str):
            padding = padding.lower()
            if padding not in ("same", "valid"):
                raise ValueError(f"padding must be 'same', 'valid' or int(s); got {padding!r}")
            return padding
        return as_int_tuple(padding, self.rank, "padding", minimum=0)

    def _options(self):
        """The op's keyword options."""
        return dict(stride=self.strides, padding=self.padding, dilation=self.dilation_rate,
                    normalize=self.normalize, kernel=self.kernel_kind, backend=self.backend)

    def _split(self, shapes):
        return _pair(self, shapes)

    def _guide_shape(self, input_shape):
        """The shape whose spatial size the guide must have: ``x``'s."""
        return tuple(self._split(input_shape)[0])

    def build(self, input_shape):
        x_shape, g_shape = self._split(input_shape)
        _check_ranks(self, x_shape, g_shape)
        _check_guide_size(self, x_shape, g_shape, self._guide_shape(input_shape))
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
        _add_kernel_weights(self)

    def call(self, inputs):
        x, guide = self._split(inputs)
        high = tf.float64 if self.compute_dtype == "float64" else tf.float32
        kernel = tf.cast(tf.convert_to_tensor(self.kernel), high)
        bias = tf.cast(tf.convert_to_tensor(self.bias), high) if self.use_bias else None
        fn = pac_conv_transpose if self.op == "pac_conv_transpose" else pac_conv
        out = fn(tf.cast(x, high), tf.cast(guide, high), kernel, bias, kernel_params=_kernel_params(self),
                 **self._options())
        return tf.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        x_shape, _ = self._split(input_shape)
        opts = {k: v for k, v in self._options().items() if k not in ("normalize", "kernel", "backend")}
        return tuple(_out_shape(self.op, tuple(x_shape), self.kernel_size, self.filters, opts).as_list())

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
            kernel=self.kernel_kind,
        )
        return config


class _PacConvTranspose(_PacConv):
    op = "pac_conv_transpose"

    def __init__(self, filters, kernel_size, strides=1, padding=0, output_padding=0, dilation_rate=1, **kwargs):
        super().__init__(filters, kernel_size, strides=strides, padding=padding, dilation_rate=dilation_rate,
                         **kwargs)
        self.output_padding = as_int_tuple(output_padding, self.rank, "output_padding", minimum=0)

    def _check_padding(self, padding):
        return as_int_tuple(padding, self.rank, "padding", minimum=0)

    def _options(self):
        return {**super()._options(), "output_padding": self.output_padding}

    def _guide_shape(self, input_shape):
        """The output's shape: the guide lives at the output resolution."""
        return self.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "output_padding": self.output_padding}


class _PacPool(keras.layers.Layer):
    rank = None

    def __init__(self, kernel_size, strides=1, padding=0, dilation_rate=1, kernel="gaussian", normalize=False,
                 channel_wise=False, backend=None, **kwargs):
        super().__init__(**kwargs)
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"backend must be None, 'cpu' or 'cuda'; got {backend!r}")
        d = self.rank
        self.kernel_size = as_int_tuple(kernel_size, d, "kernel_size", minimum=1)
        self.strides = as_int_tuple(strides, d, "strides", minimum=1)
        self.dilation_rate = as_int_tuple(dilation_rate, d, "dilation_rate", minimum=1)
        self.padding = _PacConv._check_padding(self, padding)
        self.kernel_kind = _check_kernel(kernel)
        self.normalize = bool(normalize)
        self.channel_wise = bool(channel_wise)
        self.backend = backend

    def _options(self):
        return dict(stride=self.strides, padding=self.padding, dilation=self.dilation_rate, kernel=self.kernel_kind,
                    normalize=self.normalize, channel_wise=self.channel_wise, backend=self.backend)

    def build(self, input_shape):
        x_shape, g_shape = _pair(self, input_shape)
        _check_ranks(self, x_shape, g_shape)
        _check_guide_size(self, x_shape, g_shape, x_shape)
        if self.channel_wise and None not in (x_shape[-1], g_shape[-1]) and x_shape[-1] != g_shape[-1]:
            raise ValueError(
                f"{type(self).__name__}(channel_wise=True) needs one guide feature per channel; got x "
                f"{tuple(x_shape)} and guide {tuple(g_shape)}"
            )
        _add_kernel_weights(self)

    def call(self, inputs):
        x, guide = _pair(self, inputs)
        high = tf.float64 if self.compute_dtype == "float64" else tf.float32
        out = pac_pool(tf.cast(x, high), tf.cast(guide, high), self.kernel_size, kernel_params=_kernel_params(self),
                       **self._options())
        return tf.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        x_shape, _ = _pair(self, input_shape)
        opts = dict(stride=self.strides, padding=self.padding, dilation=self.dilation_rate)
        return tuple(_out_shape("pac_pool", tuple(x_shape), self.kernel_size, None, opts).as_list())

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size, "strides": self.strides,
                "padding": self.padding, "dilation_rate": self.dilation_rate, "kernel": self.kernel_kind,
                "normalize": self.normalize, "channel_wise": self.channel_wise, "backend": self.backend}


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
        Normalise the adaptive kernel over each window's in-image taps.
    use_bias : bool
    backend : {None, "cpu", "cuda"}
        None (default) runs where the inputs live; a string forces a backend.
    kernel : str
        The adaptive kernel: ``"gaussian"`` or ``"inv_{alpha}_{lambda}"`` (``_asym``,
        ``_fixed``), as :func:`numvox.pac_conv`.  An inverse kernel's alpha and lambda are
        trained (pacnet's non-``_fixed`` kinds): the layer has two scalar weights
        ``kernel_alpha`` and ``kernel_lambda`` initialised from the name (float32, also
        under mixed precision); with ``_fixed`` they are constants (no weights).
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


@keras.saving.register_keras_serializable(package="numvox")
class PacConvTranspose2D(_PacConvTranspose):
    """Transposed pixel-adaptive 2-D convolution (guided upsampling), called as
    ``layer([x, guide])`` with ``guide`` at the output resolution.

    Parameters
    ----------
    filters : int
        Output channels O.
    kernel_size, strides, dilation_rate : int or 2 ints
    padding, output_padding : int or 2 ints
        As :func:`numvox.pac_conv_transpose` (pacnet's / PyTorch's transposed-convolution
        padding; the output is ``(s-1)*strides - 2*padding + dilation*(k-1) + 1 +
        output_padding``).
    kernel, normalize, use_bias, backend, initializers, regularizers, constraints
        As :class:`PacConv2D`; the kernel has the shape ``(kh, kw, C, O)`` of
        :func:`numvox.pac_conv_transpose`'s ``weight``.

    Inputs ``x`` ``(N, h, w, C)`` and ``guide`` ``(N, H, W, F)``; output ``(N, H, W, filters)``.
    A guide of another spatial size raises ValueError naming both shapes.
    """

    rank = 2


@keras.saving.register_keras_serializable(package="numvox")
class PacConvTranspose3D(_PacConvTranspose):
    """Transposed pixel-adaptive 3-D convolution; as :class:`PacConvTranspose2D` with
    ``(N, D, H, W, C)`` inputs."""

    rank = 3


@keras.saving.register_keras_serializable(package="numvox")
class PacPool2D(_PacPool):
    """Pixel-adaptive 2-D pooling (:func:`numvox.pac_pool`), called as ``layer([x, guide])``.

    Parameters
    ----------
    kernel_size, strides, dilation_rate : int or 2 ints
    padding : {"same", "valid"} or int or 2 ints
    kernel : str
        ``"gaussian"`` or ``"inv_{alpha}_{lambda}"`` (``_asym``, ``_fixed``); an inverse
        kernel's alpha and lambda are trainable weights unless ``_fixed``, as :class:`PacConv2D`.
    normalize : bool
    channel_wise : bool
        Channel ``c``'s kernel from guide feature ``c`` alone (guide with C features).
    backend : {None, "cpu", "cuda"}

    No weights other than ``kernel_alpha``/``kernel_lambda``.  Inputs ``x`` ``(N, H, W, C)``
    and ``guide`` ``(N, H, W, F)``; output
    ``(N, H', W', C)``.
    """

    rank = 2


@keras.saving.register_keras_serializable(package="numvox")
class PacPool3D(_PacPool):
    """Pixel-adaptive 3-D pooling; as :class:`PacPool2D` with ``(N, D, H, W, C)`` inputs."""

    rank = 3
