"""The demo's landmark model: a compact 3-D U-Net in Keras 3 (TensorFlow backend).

Structured like the TF2 U-Net of NVIDIA's examples: an input block, down blocks,
a bottleneck, up blocks with skip connections and an output block, here in 3-D and with two
heads instead of one softmax:

- ``probs``: ``(B, X, Y, Z, L+1)`` softmax over background + one class per landmark (a
  sphere of radius ``r`` around it);
- ``offsets``: ``(B, X, Y, Z, 3L)`` vector from each voxel to each landmark, in voxels,
  axis-major (``offsets[..., a*L + l]``, the layout numvox.aggregate_votes reads by default).

Both heads are float32 even under the ``mixed_float16`` policy (Keras keeps the last layers
in float32 when asked, as the mixed-precision guide recommends for softmax outputs).

Spatial sizes must be multiples of ``2 ** len(filters[1:-1])`` (8 for the default); the
demo pads other volumes.  Importing this module imports TensorFlow and Keras.
"""

import json
import os

import keras
from keras import layers

DEFAULT_CONFIG = {
    "n_landmarks": 3,
    "filters": [8, 16, 32, 64],  # input block, down blocks..., bottleneck
    "radius": 3.0,
    "shape": [32, 32, 32],  # training phantom shape
}


def _conv(x, filters, name):
    return layers.Conv3D(filters, 3, padding="same", activation="relu", name=name)(x)


def input_block(x, filters):
    x = _conv(x, filters, "input_block_conv1")
    x = _conv(x, filters, "input_block_conv2")
    return layers.MaxPooling3D(2, name="input_block_pool")(x), x


def downsample_block(x, filters, idx):
    x = _conv(x, filters, f"down{idx}_conv1")
    x = _conv(x, filters, f"down{idx}_conv2")
    return layers.MaxPooling3D(2, name=f"down{idx}_pool")(x), x


def bottleneck_block(x, filters):
    x = _conv(x, filters, "bottleneck_conv1")
    x = _conv(x, filters, "bottleneck_conv2")
    return layers.Conv3DTranspose(filters // 2, 2, strides=2, name="bottleneck_up")(x)


def upsample_block(x, residual, filters, idx):
    x = layers.Concatenate(name=f"up{idx}_concat")([x, residual])
    x = _conv(x, filters, f"up{idx}_conv1")
    x = _conv(x, filters, f"up{idx}_conv2")
    return layers.Conv3DTranspose(filters // 2, 2, strides=2, name=f"up{idx}_up")(x)


def output_block(x, residual, filters, n_landmarks):
    x = layers.Concatenate(name="output_block_concat")([x, residual])
    x = _conv(x, filters, "output_block_conv1")
    x = _conv(x, filters, "output_block_conv2")
    logits = layers.Conv3D(n_landmarks + 1, 1, name="class_logits")(x)
    probs = layers.Activation("softmax", dtype="float32", name="probs")(logits)
    offsets = layers.Conv3D(3 * n_landmarks, 1, dtype="float32", name="offsets")(x)
    return probs, offsets


def build_model(config=None):
    """Build the (untrained) landmark U-Net; ``config`` overrides :data:`DEFAULT_CONFIG`.

    Returns a functional ``keras.Model`` mapping ``(B, X, Y, Z, 1)`` float32 volumes to
    ``[probs, offsets]``.  Spatial dims are left free (``None``).
    """
    cfg = dict(DEFAULT_CONFIG, **(config or {}))
    f = list(cfg["filters"])
    n_lm = int(cfg["n_landmarks"])
    inp = keras.Input((None, None, None, 1), name="volume")
    skips = []
    x, res = input_block(inp, f[0])
    skips.append(res)
    for idx, filters in enumerate(f[1:-1]):
        x, res = downsample_block(x, filters, idx)
        skips.append(res)
    x = bottleneck_block(x, f[-1])
    for idx, filters in enumerate(reversed(f[1:-1])):
        x = upsample_block(x, skips.pop(), filters, idx)
    probs, offsets = output_block(x, skips.pop(), f[0], n_lm)
    return keras.Model(inp, [probs, offsets], name="landmark_unet")


def size_multiple(config=None):
    cfg = dict(DEFAULT_CONFIG, **(config or {}))
    return 2 ** (len(cfg["filters"]) - 1)


def data_dir():
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


WEIGHTS_NAME = "landmark_unet.weights.h5"
CONFIG_NAME = "landmark_unet.json"


def load_bundled_model(directory=None):
    """The bundled trained model (``numvox/data/landmark_unet.*``) and its config dict.

    Raises FileNotFoundError when the weights are missing (re-train with
    ``python -m numvox.demo.train``).
    """
    directory = directory or data_dir()
    with open(os.path.join(directory, CONFIG_NAME)) as fh:
        meta = json.load(fh)
    model = build_model(meta["config"])
    model.load_weights(os.path.join(directory, WEIGHTS_NAME))
    return model, meta
