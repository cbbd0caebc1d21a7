"""Train the demo's landmark U-Net on synthetic phantoms: ``python -m numvox.demo.train``.

Every step draws fresh phantoms (seeds ``TRAIN_SEED_BASE + i``, never the evaluation seeds
below it), so there is no fixed training set to over-fit.  The train step is a
``tf.function`` (XLA-compiled with ``--jit``), run under the Keras ``mixed_float16`` policy
with loss scaling when ``--mixed-precision`` is given.

Defaults are chosen from measurements on this project's 2-core x86 CPU (``--time-steps N``
measures them again on your machine; TF 2.21, batch 4 of 32³):

==================================  ==================================================
configuration                       median train step
==================================  ==================================================
float32, no XLA (CPU default)       0.12 s
float32, ``jit_compile=True``       3.3 s   (XLA's CPU Conv3D is far slower than oneDNN's)
mixed_float16, no XLA               fails: TF has no float16 ``MaxPool3D`` CPU kernel
mixed_float16, ``jit_compile=True`` 2.9 s
==================================  ==================================================

So on CPU both are off by default; with a GPU visible both default to on (Tensor Cores and
XLA fusion are where they pay).  ``--mixed-precision`` / ``--jit`` and
``--no-mixed-precision`` / ``--no-jit`` override either choice.

Outputs ``landmark_unet.weights.h5`` and ``landmark_unet.json`` (config, training record
with the evaluation history) in ``--out`` (default: the package's ``numvox/data``, where
``numvox demo`` loads them).

The bundled model was trained with the defaults (3000 steps of 8 phantoms at 32³, float32,
no XLA).  Cost: one step took 0.12 s at batch 4 on the idle 2-core machine, so the default
run is about 3000 × 0.25 s ≈ 12-13 minutes there; the bundled run itself took 56 minutes
because five to ten other jobs shared the two cores (load average 10-12).  The evaluation
error is already 0.35 voxels after 1500 steps (0.28 after 3000), so ``--steps 1500``
halves the time for nearly the same model.
"""

import argparse
import json
import os
import queue
import sys
import threading
import time

import numpy as np

from .phantom import DEFAULT_RADIUS, N_LANDMARKS, TRAIN_SEED_BASE, generate_phantom, training_targets

CLASS_WEIGHTS = (1.0, 4.0, 4.0, 4.0)
OFFSET_LOSS_WEIGHT = 0.5


def make_batch(seeds, shape, radius):
    vols, cls, offs, masks = [], [], [], []
    for s in seeds:
        v, lms = generate_phantom(int(s), shape)
        c, o, m = training_targets(lms, shape, radius)
        vols.append(v[..., None])
        cls.append(c)
        offs.append(o)
        masks.append(m)
    return np.stack(vols), np.stack(cls), np.stack(offs), np.stack(masks)


def _producer(q, start, batch, shape, radius, stop):
    i = start
    while not stop.is_set():
        item = make_batch(range(TRAIN_SEED_BASE + i, TRAIN_SEED_BASE + i + batch), shape, radius)
        i += batch
        while not stop.is_set():
            try:
                q.put(item, timeout=0.5)
                break
            except queue.Full:
                continue


def build_train_step(model, optimizer, *, jit, mixed, n_landmarks):
    import tensorflow as tf

    class_w = tf.constant(CLASS_WEIGHTS[: n_landmarks + 1], tf.float32)

    def losses(vol, cls, offs, mask):
        probs, pred_off = model(vol, training=True)
        probs = tf.cast(probs, tf.float32)
        pred_off = tf.cast(pred_off, tf.float32)
        onehot = tf.one_hot(cls, n_landmarks + 1)
        ce = -tf.reduce_sum(onehot * tf.math.log(probs + 1e-7), -1)
        w = tf.gather(class_w, cls)
        ce = tf.reduce_sum(w * ce) / tf.reduce_sum(w)
        mask3 = tf.concat([mask] * 3, axis=-1)  # axis-major: channel a*L + l uses mask l
        err = tf.abs(pred_off - offs)
        huber = tf.where(err < 1.0, 0.5 * err * err, err - 0.5)
        off = tf.reduce_sum(mask3 * huber) / (tf.reduce_sum(mask3) + 1.0)
        return ce, off

    def step(vol, cls, offs, mask):
        with tf.GradientTape() as tape:
            ce, off = losses(vol, cls, offs, mask)
            loss = ce + OFFSET_LOSS_WEIGHT * off
            scaled = optimizer.scale_loss(loss) if mixed else loss
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return ce, off

    return tf.function(step, jit_compile=bool(jit), reduce_retracing=True)


def numpy_landmarks(probs, offsets, threshold=0.5):
    """Vote-weighted mean target per landmark (monitoring only; the demo uses numvox)."""
    n_lm = probs.shape[-1] - 1
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in probs.shape[:3]], indexing="ij"), -1)
    out = np.full((n_lm, 3), np.nan)
    for lm in range(n_lm):
        p = probs[..., lm + 1]
        sel = p >= threshold
        if not sel.any():
            continue
        tgt = grid[sel] + np.stack([offsets[..., a * n_lm + lm][sel] for a in range(3)], -1)
        w = p[sel][:, None]
        med = np.median(tgt, 0)
        near = np.linalg.norm(tgt - med, axis=1) < 3
        out[lm] = (tgt[near] * w[near]).sum(0) / w[near].sum() if near.any() else med
    return out


def evaluate(model, seeds, shape):
    errs = []
    for s in seeds:
        v, lms = generate_phantom(int(s), shape)
        probs, offs = model.predict_on_batch(v[None, ..., None])
        found = numpy_landmarks(np.asarray(probs[0], np.float32), np.asarray(offs[0], np.float32))
        errs.append(np.linalg.norm(found - lms, axis=1))
    return np.asarray(errs)  # (n_seeds, L), NaN where not found


def found_mean_errors(errs):
    """Mean error over the found landmarks, and per landmark: ``(float, (L,) array)``.

    ``errs`` is :func:`evaluate`'s ``(n_seeds, L)`` array, NaN where a landmark was not
    found; a mean over nothing found is NaN (computed from the found entries only, so an
    untrained model that finds nothing gives NaN, not a NumPy warning).
    """
    found = np.isfinite(errs)
    counts = found.sum(axis=0)
    sums = np.where(found, errs, 0.0).sum(axis=0)
    per_landmark = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    total = float(sums.sum() / counts.sum()) if counts.sum() else float("nan")
    return total, per_landmark


def parse_args(argv):
    gpu_default = None
    p = argparse.ArgumentParser(prog="python -m numvox.demo.train", description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--shape", type=int, nargs=3, default=[32, 32, 32])
    p.add_argument("--filters", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--radius", type=float, default=DEFAULT_RADIUS)
    p.add_argument("--mixed-precision", dest="mixed", action="store_true", default=gpu_default,
                   help="train under the mixed_float16 policy (default: on with a GPU, off on CPU)")
    p.add_argument("--no-mixed-precision", dest="mixed", action="store_false")
    p.add_argument("--jit", dest="jit", action="store_true", default=None,
                   help="XLA-compile the train step (default: on with a GPU, off on CPU)")
    p.add_argument("--no-jit", dest="jit", action="store_false")
    p.add_argument("--out", default=None, help="output directory (default: numvox/data in the package)")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--eval-seeds", type=int, default=10, help="phantoms per evaluation (phantom numbers 100, 101, ...)")
    p.add_argument("--time-steps", type=int, default=0,
                   help="only time N train steps for each mixed/jit combination and exit")
    p.add_argument("--threads", type=int, default=0, help="TF intra-op threads (0: TF's default)")
    return p.parse_args(argv)


def time_configs(args):
    """Median train-step time for each (mixed, jit) combination, each in a fresh model."""
    import keras
    import tensorflow as tf

    from .model import build_model

    batch = make_batch(range(TRAIN_SEED_BASE, TRAIN_SEED_BASE + args.batch), tuple(args.shape), args.radius)
    results = {}
    for mixed in (False, True):
        for jit in (False, True):
            keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
            model = build_model({"filters": args.filters, "n_landmarks": N_LANDMARKS})
            opt = keras.optimizers.Adam(1e-3)
            if mixed:
                opt = keras.optimizers.LossScaleOptimizer(opt)
            step = build_train_step(model, opt, jit=jit, mixed=mixed, n_landmarks=N_LANDMARKS)
            tensors = [tf.constant(x) for x in batch]
            key = f"mixed_float16={mixed}, jit_compile={jit}"
            t0 = time.perf_counter()
            try:
                step(*tensors)
            except tf.errors.OpError as exc:  # e.g. no float16 MaxPool3D kernel on CPU without XLA
                results[key] = {"error": str(exc).splitlines()[0][:200]}
                print(key, json.dumps(results[key]), flush=True)
                continue
            first = time.perf_counter() - t0
            times = []
            for _ in range(args.time_steps):
                t0 = time.perf_counter()
                ce, off = step(*tensors)
                float(ce)
                times.append(time.perf_counter() - t0)
            results[key] = {"first_s": first, "median_step_s": float(np.median(times))}
            print(key, json.dumps(results[key]), flush=True)
    keras.mixed_precision.set_global_policy("float32")
    return results


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    have_gpu = bool(tf.config.list_physical_devices("GPU"))
    if args.mixed is None:
        args.mixed = have_gpu
    if args.jit is None:
        args.jit = have_gpu
    if args.time_steps:
        time_configs(args)
        return 0

    import keras

    from .model import CONFIG_NAME, WEIGHTS_NAME, build_model, data_dir

    out = args.out or data_dir()
    os.makedirs(out, exist_ok=True)
    shape = tuple(args.shape)
    config = {"n_landmarks": N_LANDMARKS, "filters": list(args.filters), "radius": args.radius, "shape": list(shape)}
    keras.mixed_precision.set_global_policy("mixed_float16" if args.mixed else "float32")
    keras.utils.set_random_seed(0)
    model = build_model(config)
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, args.steps, alpha=0.05)
    opt = keras.optimizers.Adam(schedule)
    if args.mixed:
        opt = keras.optimizers.LossScaleOptimizer(opt)
    step = build_train_step(model, opt, jit=args.jit, mixed=args.mixed, n_landmarks=N_LANDMARKS)
    print(f"model: {model.count_params()} parameters; mixed_float16={args.mixed} jit_compile={args.jit} "
          f"gpu={have_gpu}; {args.steps} steps of batch {args.batch} at {shape}", flush=True)

    q = queue.Queue(maxsize=6)
    stop = threading.Event()
    producer = threading.Thread(target=_producer, args=(q, 0, args.batch, shape, args.radius, stop), daemon=True)
    producer.start()
    # never trained on (below TRAIN_SEED_BASE), and not the tests' 0..4
    eval_seeds = range(100, 100 + max(1, args.eval_seeds))
    t_start = time.perf_counter()
    history = []
    ce_acc, off_acc = [], []
    try:
        for i in range(1, args.steps + 1):
            vol, cls, offs, mask = q.get()
            ce, off = step(tf.constant(vol), tf.constant(cls), tf.constant(offs), tf.constant(mask))
            ce_acc.append(float(ce))
            off_acc.append(float(off))
            if i % 50 == 0:
                print(f"step {i}: ce {np.mean(ce_acc):.4f} offset-huber {np.mean(off_acc):.4f} "
                      f"({time.perf_counter() - t_start:.0f} s)", flush=True)
                ce_acc, off_acc = [], []
            if i % args.eval_every == 0 or i == args.steps:
                errs = evaluate(model, eval_seeds, shape)
                mre, per_landmark = found_mean_errors(errs)
                missing = int(np.isnan(errs).sum())
                history.append({"step": i, "mean_radial_error": mre, "missing": missing,
                                "elapsed_s": time.perf_counter() - t_start})
                print(f"eval step {i}: mean radial error {mre:.3f} voxels, missing {missing}, "
                      f"per landmark {per_landmark.round(3).tolist()}", flush=True)
                model.save_weights(os.path.join(out, WEIGHTS_NAME))
                meta = {
                    "config": config,
                    "training": {
                        "steps_done": i, "steps": args.steps, "batch": args.batch, "lr": args.lr,
                        "mixed_float16": bool(args.mixed), "jit_compile": bool(args.jit),
                        "train_seeds": f"{TRAIN_SEED_BASE}..{TRAIN_SEED_BASE + i * args.batch - 1}",
                        "elapsed_s": round(time.perf_counter() - t_start, 1),
                        "command": "python -m numvox.demo.train " + " ".join(sys.argv[1:] if argv is None else argv),
                        "eval_seeds": f"{eval_seeds.start}..{eval_seeds.stop - 1}",
                        "history": history,
                    },
                }
                with open(os.path.join(out, CONFIG_NAME), "w") as fh:
                    json.dump(meta, fh, indent=1)
    finally:
        stop.set()
    print(f"done in {time.perf_counter() - t_start:.0f} s; weights in {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
