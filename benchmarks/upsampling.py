"""Joint upsampling with numvox's Keras PAC layers (the task of Su et al., CVPR 2019): x2
upsamplers in 2-D and 3-D, trained on synthetic piecewise-smooth targets with an edge-aligned
guide, against bilinear / trilinear upsampling of the same low-resolution input.

``python -m benchmarks upsampling [--quick]`` writes the section into ``benchmarks/RESULTS.md``
and the figure ``benchmarks/upsampling.png``; ``python -m benchmarks.upsampling [--quick]
[--output PATH] [--png PATH] [--no-write]`` does the same on its own.

Data (NumPy, seeded): each target is a few regions (half-spaces, balls and convex polytopes cut
from a grid, painted one over the other), each carrying its own linear ramp plus a constant.
The guide has the target's region boundaries but not its values: each region has its own
random colour (3 channels in 2-D, 2 in 3-D) plus mild noise.  The low-resolution input is the
target averaged over 2x2 (2x2x2) blocks; the baseline is linear interpolation with the
matching half-pixel alignment (``tf.image.resize(..., "bilinear")`` in 2-D, the same separable
interpolation written in NumPy for 3-D).

Model (Keras functional, :func:`build_model`): guide features from two ordinary convolutions
(learned, so the Gaussian adaptive kernel's scale is learned too), a normalised
``PacConvTranspose`` x2 of the low-resolution input and two convolutions of it, a ``PacConv``
refinement (which also sees the linear upsampling) and a normalised ``PacPool``, then a 1x1
convolution predicting a residual added to the linear upsampling.  Adam, MSE loss.
"""

import argparse
import dataclasses
import datetime
import pathlib
import sys
import tempfile
import time

import numpy as np

SECTION = "Joint upsampling: Keras PAC layers against bilinear / trilinear"
HERE = pathlib.Path(__file__).resolve().parent
PNG = HERE / "upsampling.png"


@dataclasses.dataclass
class Case:
    """One upsampling problem and its training schedule."""

    ndim: int
    size: int  # high-resolution side
    n_train: int
    n_test: int
    epochs: int
    batch: int = 4
    width: int = 16  # feature channels
    guide_features: int = 8  # features the adaptive kernels compare
    guide_channels: int = 3
    shapes: int = 4  # shapes painted over the background region
    learning_rate: float = 5e-3  # Adam's, decayed to 0 over the run (cosine)
    guide_scale: float = 64.0  # variance scale of the guide features' initial weights
    residual_init: float = 0.02  # standard deviation of the residual convolution's initial weights
    seed: int = 0

    @property
    def name(self):
        kind = "2-D x2" if self.ndim == 2 else "3-D x2"
        return f"{kind}, {'x'.join([str(self.size)] * self.ndim)} from {'x'.join([str(self.size // 2)] * self.ndim)}"


def cases(quick):
    """The 2-D and 3-D cases at full or ``--quick`` size."""
    three = dict(batch=2, width=8, guide_features=4, guide_channels=2, shapes=3)
    if quick:
        return [Case(2, 32, 48, 16, 10), Case(3, 16, 16, 8, 10, **three)]
    return [Case(2, 64, 128, 64, 12), Case(3, 24, 32, 16, 20, **three)]


# -- data -------------------------------------------------------------------------------------


def region_map(rng, shape, shapes):
    """Integer region labels of ``shape``: region 0 is the background; each of ``shapes``
    random half-spaces, balls or convex polytopes is painted over it as the next label."""
    d = len(shape)
    coords = np.stack(np.meshgrid(*[np.arange(s) + 0.5 for s in shape], indexing="ij"), -1) / np.array(shape)
    labels = np.zeros(shape, np.int32)
    for k in range(1, shapes + 1):
        centre = rng.uniform(0.2, 0.8, d)
        kind = rng.integers(3)
        if kind == 0:  # half-space through a point
            normal = rng.standard_normal(d)
            mask = (coords - centre) @ normal > 0
        elif kind == 1:  # ball
            mask = np.linalg.norm(coords - centre, axis=-1) < rng.uniform(0.12, 0.3)
        else:  # convex polytope: intersection of half-spaces around the centre
            mask = np.ones(shape, bool)
            for _ in range(rng.integers(d + 1, d + 4)):
                normal = rng.standard_normal(d)
                normal /= np.linalg.norm(normal)
                mask &= (coords - centre) @ normal < rng.uniform(0.1, 0.3)
        labels[mask] = k
    return labels, coords


def make_data(rng, case, n):
    """``(low, guide, truth)`` float32 arrays, channels-last: ``n`` targets of side
    ``case.size``, their edge-aligned guides and their 2x block means."""
    shape = (case.size,) * case.ndim
    truth = np.empty((n, *shape, 1), np.float32)
    guide = np.empty((n, *shape, case.guide_channels), np.float32)
    for i in range(n):
        labels, coords = region_map(rng, shape, case.shapes)
        regions = case.shapes + 1
        offset = rng.uniform(0.1, 0.9, regions)
        slope = rng.normal(0.0, 0.4, (regions, case.ndim))
        truth[i, ..., 0] = offset[labels] + np.einsum("...k,...k->...", slope[labels], coords - 0.5)
        colours = rng.uniform(0.0, 1.0, (regions, case.guide_channels))
        guide[i] = colours[labels] + rng.normal(0.0, 0.03, guide.shape[1:])
    return block_mean(truth, case.ndim), guide, truth


def block_mean(a, ndim):
    """The mean over 2x..x2 blocks of the ``ndim`` spatial axes of a channels-last batch."""
    n, c = a.shape[0], a.shape[-1]
    split = [n]
    for s in a.shape[1:-1]:
        split += [s // 2, 2]
    return a.reshape(split + [c]).mean(axis=tuple(range(2, 2 * ndim + 1, 2)))


def linear_upsample(low, ndim):
    """x2 separable linear interpolation of a channels-last batch, aligned with the 2x block
    mean: high-resolution sample ``j`` sits at low-resolution coordinate ``(j + 0.5) / 2 - 0.5``
    (clamped at the borders), as ``tf.image.resize(..., "bilinear")`` places it."""
    out = np.asarray(low, np.float64)
    for axis in range(1, ndim + 1):
        s = out.shape[axis]
        pos = np.clip((np.arange(2 * s) + 0.5) / 2 - 0.5, 0, s - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, s - 1)
        w = (pos - lo).reshape([-1 if a == axis else 1 for a in range(out.ndim)])
        out = np.take(out, lo, axis) * (1 - w) + np.take(out, hi, axis) * w
    return out.astype(np.float32)


def baseline(low, ndim):
    """The baseline a user would reach for: bilinear resize in 2-D, trilinear in 3-D."""
    if ndim == 2:
        import tensorflow as tf

        return tf.image.resize(low, [2 * s for s in low.shape[1:3]], "bilinear").numpy()
    return linear_upsample(low, ndim)


# -- model ------------------------------------------------------------------------------------


def build_model(case, backend=None):
    """Inputs ``[low, guide, linear]``; output ``linear + residual`` at the guide's size."""
    import keras

    import numvox.keras as nk

    d, w, size = case.ndim, case.width, case.size
    conv = keras.layers.Conv2D if d == 2 else keras.layers.Conv3D
    pac_t = nk.PacConvTranspose2D if d == 2 else nk.PacConvTranspose3D
    pac = nk.PacConv2D if d == 2 else nk.PacConv3D
    pool = nk.PacPool2D if d == 2 else nk.PacPool3D
    low = keras.Input((size // 2,) * d + (1,), name="low")
    guide = keras.Input((size,) * d + (case.guide_channels,), name="guide")
    linear = keras.Input((size,) * d + (1,), name="linear")
    g = conv(w, 3, padding="same", activation="relu")(guide)
    # large initial guide features: the Gaussian kernel tells regions apart from the first step
    g = conv(case.guide_features, 3, padding="same",
             kernel_initializer=keras.initializers.VarianceScaling(case.guide_scale))(g)
    x = conv(w, 3, padding="same", activation="relu")(low)
    x = conv(w, 3, padding="same", activation="relu")(x)
    x = keras.layers.Concatenate()([low, x])
    # kernel 5 / padding 2 (2-D), kernel 3 / padding 1 (3-D), output_padding 1: exactly x2
    k = 5 if d == 2 else 3
    up = pac_t(w, k, strides=2, padding=k // 2, output_padding=1, normalize=True, backend=backend)([x, g])
    up = keras.layers.ReLU()(up)
    h = keras.layers.Concatenate()([up, linear])
    h = pac(w, 3, padding="same", backend=backend)([h, g])
    h = keras.layers.ReLU()(h)
    h = pool(3, padding=1, normalize=True, backend=backend)([h, g])
    # small initial residual: training starts from about the linear upsampling's error
    residual = conv(1, 1, kernel_initializer=keras.initializers.RandomNormal(0.0, case.residual_init))(h)
    out = keras.layers.Add()([linear, residual])
    return keras.Model([low, guide, linear], out)


def optimizer(case):
    """Adam with the learning rate decayed to 0 over the whole run (cosine): large steps
    early, small ones at the end, so that the last epoch does not leave a noisy result."""
    import keras

    steps = case.epochs * -(-case.n_train // case.batch)
    return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(case.learning_rate, steps))


def rmse(a, b):
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


def run_case(case, backend=None, log=print):
    """Train ``case``'s upsampler; its test errors, training time and one test example."""
    import keras

    rng = np.random.default_rng(case.seed + 100 * case.ndim)
    keras.utils.set_random_seed(case.seed)
    train = make_data(rng, case, case.n_train)
    test = make_data(rng, case, case.n_test)
    inputs = {}
    for part, (low, guide, _) in (("train", train), ("test", test)):
        inputs[part] = [low, guide, linear_upsample(low, case.ndim)]
    model = build_model(case, backend)
    model.compile(optimizer(case), "mse")
    t0 = time.perf_counter()
    model.fit(inputs["train"], train[2], batch_size=case.batch, epochs=case.epochs, verbose=0)
    train_s = time.perf_counter() - t0
    pred = model.predict(inputs["test"], batch_size=case.batch, verbose=0)
    base = baseline(test[0], case.ndim)
    result = dict(case=case, model=model, train_s=train_s, base_rmse=rmse(base, test[2]),
                  pac_rmse=rmse(pred, test[2]), inputs=inputs["test"],
                  example=dict(low=test[0][0], guide=test[1][0], base=base[0], pac=pred[0], truth=test[2][0]))
    log(f"  {case.name}: baseline RMSE {result['base_rmse']:.4f}, PAC {result['pac_rmse']:.4f}, "
        f"trained {train_s:.1f} s")
    return result


def reload_difference(model, inputs, path):
    """Save ``model`` to ``path`` (``.keras``), load it back and return the largest absolute
    difference between the two models' predictions on ``inputs``."""
    import keras

    model.save(path)
    again = keras.models.load_model(path)
    a = model.predict(inputs, verbose=0)
    b = again.predict(inputs, verbose=0)
    return float(np.max(np.abs(a - b)))


# -- outputs ----------------------------------------------------------------------------------


def _slice(a):
    """A 2-D image of a channels-last example: itself, or the central slice of a volume."""
    return a[a.shape[0] // 2] if a.ndim == 4 else a


def write_figure(results, path):
    """One row per case: low-res input, guide, linear upsampling, PAC upsampler, truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = ("low-res input", "guide", "bilinear", "PAC upsampler", "truth")
    fig, axes = plt.subplots(len(results), 5, figsize=(12.5, 2.8 * len(results)), squeeze=False)
    for row, res in zip(axes, results):
        ex = {k: _slice(v) for k, v in res["example"].items()}
        vmin, vmax = float(ex["truth"].min()), float(ex["truth"].max())
        guide = ex["guide"]
        guide = np.clip(guide, 0, 1) if guide.shape[-1] == 3 else guide[..., 0]
        images = (ex["low"][..., 0], guide, ex["base"][..., 0], ex["pac"][..., 0], ex["truth"][..., 0])
        for j, (ax, img) in enumerate(zip(row, images)):
            kw = {} if j == 1 else dict(cmap="viridis", vmin=vmin, vmax=vmax)
            ax.imshow(img, interpolation="nearest", **kw)
            ax.set_xticks([])
            ax.set_yticks([])
            title = "trilinear" if j == 2 and res["case"].ndim == 3 else titles[j]
            if j in (2, 3):
                title += f", RMSE {rmse(images[j], images[4]):.3f}"
            ax.set_title(title, fontsize=9)
        row[0].set_ylabel(res["case"].name + ("\n(central slice)" if res["case"].ndim == 3 else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def section(quick=False, backend="cpu", log=print, png=PNG, sizes=None):
    """Train both cases, write the figure to ``png`` and return the section's markdown.
    ``sizes``, when given, replaces :func:`cases` (tests use tiny ones)."""
    from ._harness import machine_description

    layer_backend = "cuda" if backend == "cuda" else None
    results = [run_case(case, layer_backend, log) for case in (sizes or cases(quick))]
    with tempfile.TemporaryDirectory() as tmp:
        diff = reload_difference(results[0]["model"], results[0]["inputs"], pathlib.Path(tmp) / "upsampler.keras")
    write_figure(results, png)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## {SECTION}",
        "",
        f"Machine: {machine_description()}. Backend: {backend}. Run: {when}{' (quick sizes)' if quick else ''}. "
        "Written by `python -m benchmarks upsampling` (`benchmarks/upsampling.py`; figure "
        f"`benchmarks/{pathlib.Path(png).name}`).",
        "",
        "| case | train / test | bilinear / trilinear RMSE | PAC upsampler RMSE | ratio | train time | epochs |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        c = r["case"]
        lines.append(
            f"| {c.name} | {c.n_train} / {c.n_test} | {r['base_rmse']:.4f} | {r['pac_rmse']:.4f} | "
            f"{r['pac_rmse'] / r['base_rmse']:.2f} | {r['train_s']:.0f} s | {c.epochs} |"
        )
    lines += [
        "",
        "RMSE over the held-out test set (targets in about [0, 1]; ratio = PAC / linear). Targets: "
        "a few regions (half-spaces, balls, convex polytopes), each a random linear ramp; guide: "
        "each region's own random colour plus noise (3 channels in 2-D, 2 in 3-D); input: 2x block "
        "means. Baselines: `tf.image.resize(..., \"bilinear\")` (2-D) and the same half-pixel-aligned "
        "separable linear interpolation in NumPy (3-D). Model: two Conv layers make the guide "
        "features; a normalised `PacConvTranspose` (x2, kernel 5 in 2-D / 3 in 3-D) upsamples "
        "features of the low-resolution input; `PacConv` (3) and a normalised `PacPool` (3) refine "
        "them; a 1x1 Conv adds a residual to the linear upsampling. Adam with cosine decay, MSE loss. "
        "The trained 2-D model saved as `.keras` and reloaded with `keras.models.load_model` "
        f"predicts the same (largest difference {diff:.1e}).",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    from .__main__ import RESULTS, update_results

    parser = argparse.ArgumentParser(prog="python -m benchmarks.upsampling", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--backend", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--output", default=str(RESULTS), help="results file (default: %(default)s)")
    parser.add_argument("--png", default=str(PNG), help="figure (default: %(default)s)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave the results file alone")
    args = parser.parse_args(argv)
    text = section(quick=args.quick, backend=args.backend, log=lambda s: print(s, flush=True), png=args.png)
    print(text, flush=True)
    if not args.no_write:
        update_results("upsampling", text, pathlib.Path(args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
