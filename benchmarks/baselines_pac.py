"""Baselines for the PAC benchmark: the im2col PAC a TensorFlow user would write.

``tf.image.extract_patches`` (2-D) / ``tf.extract_volume_patches`` (3-D) build patch buffers
of ``x`` (``k^d*C`` values per pixel) and of the guide (``k^d*F``), the Gaussian weights come
from the guide patches minus the centre features, and an ``einsum``-style contraction applies
the filter.  Gradients are TensorFlow's autodiff of that graph.  ``padding="SAME"``, stride 1,
odd kernels, no normalisation (the benchmark configuration; TF's SAME padding equals
numvox's there).
"""

import numpy as np


def _tf():
    import tensorflow as tf

    return tf


def im2col_pac(x, guide, weight, bias):
    """PAC forward through explicit patch buffers (stride 1, SAME, odd kernels)."""
    tf = _tf()
    d = len(weight.shape) - 2
    ks = [int(k) for k in weight.shape[:d]]
    C, O = int(weight.shape[-2]), int(weight.shape[-1])
    F = int(guide.shape[-1])
    T = int(np.prod(ks))
    if d == 2:
        def patches(a):
            return tf.image.extract_patches(a, [1, *ks, 1], [1, 1, 1, 1], [1, 1, 1, 1], "SAME")
    else:
        def patches(a):
            return tf.extract_volume_patches(a, [1, *ks, 1], [1, 1, 1, 1, 1], "SAME")
    lead = tf.shape(x)[:-1]
    xp = tf.reshape(patches(x), tf.concat([lead, [T, C]], 0))  # (N, *S, T, C), tap-major
    gp = tf.reshape(patches(guide), tf.concat([lead, [T, F]], 0))
    K = tf.exp(-0.5 * tf.reduce_sum((gp - guide[..., None, :]) ** 2, axis=-1))  # (N, *S, T)
    weighted = tf.reshape(xp * K[..., None], tf.concat([lead, [T * C]], 0))
    out = tf.tensordot(weighted, tf.reshape(weight, [T * C, O]), 1)
    return out + bias


def make_tf_functions():
    """``(forward, forward_backward, conv)`` as ``tf.function``s."""
    tf = _tf()

    @tf.function(jit_compile=False)
    def forward(x, guide, weight, bias):
        return im2col_pac(x, guide, weight, bias)

    @tf.function(jit_compile=False)
    def forward_backward(x, guide, weight, bias, grad_out):
        with tf.GradientTape() as tape:
            tape.watch([x, guide, weight, bias])
            out = im2col_pac(x, guide, weight, bias)
        return (out,) + tuple(tape.gradient(out, [x, guide, weight, bias], output_gradients=grad_out))

    @tf.function(jit_compile=False)
    def conv(x, weight):
        if len(weight.shape) == 4:
            return tf.nn.conv2d(x, weight, 1, "SAME")
        return tf.nn.conv3d(x, weight, [1, 1, 1, 1, 1], "SAME")

    return forward, forward_backward, conv


def patch_buffer_bytes(x_shape, F, ks, itemsize=4):
    """Bytes of the x and guide patch buffers the im2col approach materialises."""
    pixels = int(np.prod(x_shape[:-1]))
    taps = int(np.prod(ks))
    return pixels * taps * (x_shape[-1] + F) * itemsize
