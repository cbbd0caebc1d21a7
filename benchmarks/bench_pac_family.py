"""The PAC family: transposed PAC (joint upsampling) and PAC pooling against TensorFlow
im2col versions, and the joint-upsampling example (a small PAC upsampler trained against
bilinear/trilinear upsampling).

Baselines (written here, in TensorFlow, inside ``tf.function``; gradients by autodiff):

- transposed PAC: zero-insert ``x`` with ``conv2d_transpose``/``conv3d_transpose`` (an
  identity 1×1 filter), pad by ``P = (k-1) - padding`` (and ``output_padding``),
  ``extract_patches`` of the upsampled input and of the guide, Gaussian weights, ``einsum``;
- PAC pooling: ``extract_patches`` of ``x`` and of the guide, Gaussian weights, a sum.

Both sides run in this process on the same float32 data and are checked to agree before
timing.
"""

import numpy as np

from ._harness import Baseline, Case, cpu_seconds

SECTION = "PAC family: transposed PAC and PAC pooling"

_T2 = dict(N=2, s=(64, 64), C=16, O=16, F=8, k=(5, 5), stride=2, padding=2, output_padding=1)  # 64² -> 128²
_T3 = dict(N=1, s=(24, 24, 24), C=8, O=8, F=4, k=(3, 3, 3), stride=2, padding=1, output_padding=1)  # 24³ -> 48³
_P2 = dict(N=2, S=(128, 128), C=16, F=8, k=(5, 5))


def _out(cfg):
    return tuple((a - 1) * cfg["stride"] - 2 * cfg["padding"] + k + cfg["output_padding"]
                 for a, k in zip(cfg["s"], cfg["k"]))


def _patch_mib(shape_sp, N, T, channels):
    return N * int(np.prod(shape_sp)) * T * channels * 4 / 2**20


def _tf_patches(tf, a, ks):
    if len(ks) == 2:
        return tf.image.extract_patches(a, [1, *ks, 1], [1, 1, 1, 1], [1, 1, 1, 1], "VALID")
    return tf.extract_volume_patches(a, [1, *ks, 1], [1, 1, 1, 1, 1], "VALID")


def _tf_transpose_pac(tf, cfg):
    """TF im2col transposed PAC (Gaussian, no normalisation) for ``cfg``: (forward, fwd+bwd)."""
    ks, d, st = cfg["k"], len(cfg["k"]), cfg["stride"]
    T = int(np.prod(ks))
    P = [k - 1 - cfg["padding"] for k in ks]
    half = [(k - 1) // 2 for k in ks]
    S = _out(cfg)

    def run(x, f, w, b):
        N, C = tf.shape(x)[0], x.shape[-1]
        eye = tf.reshape(tf.eye(C, dtype=x.dtype), (1,) * d + (C, C))
        zs = [(a - 1) * st + 1 for a in cfg["s"]]
        if d == 2:
            xz = tf.nn.conv2d_transpose(x, eye, [N, *zs, C], st, "VALID")
        else:
            xz = tf.nn.conv3d_transpose(x, eye, [N, *zs, C], [1, st, st, st, 1], "VALID")
        xz = tf.pad(xz, [[0, 0]] + [[p, p + cfg["output_padding"]] for p in P] + [[0, 0]])
        fp = tf.pad(f, [[0, 0]] + [[h, k - 1 - h] for h, k in zip(half, ks)] + [[0, 0]])
        xpat = tf.reshape(_tf_patches(tf, xz, ks), [N, *S, T, C])
        fpat = tf.reshape(_tf_patches(tf, fp, ks), [N, *S, T, f.shape[-1]])
        K = tf.exp(-0.5 * tf.reduce_sum((fpat - f[..., None, :]) ** 2, -1))
        eq = "nhwtc,tco->nhwo" if d == 2 else "ndhwtc,tco->ndhwo"
        return tf.einsum(eq, xpat * K[..., None], tf.reshape(w, (T, C, -1))) + b

    fwd = tf.function(run)

    @tf.function
    def fwd_bwd(x, f, w, b, go):
        with tf.GradientTape() as tape:
            tape.watch([x, f, w, b])
            out = run(x, f, w, b)
        return [out] + tape.gradient(out, [x, f, w, b], output_gradients=go)

    return fwd, fwd_bwd


def _tf_pool(tf, ks):
    T = int(np.prod(ks))

    @tf.function
    def pool(x, f):
        pad = [[0, 0]] + [[(k - 1) // 2, k - 1 - (k - 1) // 2] for k in ks] + [[0, 0]]
        xpat = _tf_patches(tf, tf.pad(x, pad), ks)
        fpat = _tf_patches(tf, tf.pad(f, pad), ks)
        xpat = tf.reshape(xpat, tf.concat([tf.shape(x)[:-1], [T, x.shape[-1]]], 0))
        fpat = tf.reshape(fpat, tf.concat([tf.shape(f)[:-1], [T, f.shape[-1]]], 0))
        K = tf.exp(-0.5 * tf.reduce_sum((fpat - f[..., None, :]) ** 2, -1))
        return tf.reduce_sum(xpat * K[..., None], -2)

    return pool


def _check(label, got, want):
    got, want = np.asarray(got), np.asarray(want)
    err = np.abs(got - want).max() / max(np.abs(want).max(), 1e-30)
    if err > 1e-4:
        raise AssertionError(f"numvox and the TF baseline disagree ({label}): rel. error {err:.2e}")


def _transpose_cases(tf, numvox, cfg, label, backend, cpu_lines):
    rng = np.random.default_rng(0)
    S = _out(cfg)
    x = rng.standard_normal((cfg["N"], *cfg["s"], cfg["C"])).astype(np.float32)
    f = (0.5 * rng.standard_normal((cfg["N"], *S, cfg["F"]))).astype(np.float32)
    w = (0.1 * rng.standard_normal(cfg["k"] + (cfg["C"], cfg["O"]))).astype(np.float32)
    b = rng.standard_normal(cfg["O"]).astype(np.float32)
    go = rng.standard_normal((cfg["N"], *S, cfg["O"])).astype(np.float32)
    opts = dict(stride=cfg["stride"], padding=cfg["padding"], output_padding=cfg["output_padding"], backend=backend)
    tf_fwd, tf_fb = _tf_transpose_pac(tf, cfg)
    t = [tf.constant(a) for a in (x, f, w, b, go)]
    _check(f"{label} forward", numvox.pac_conv_transpose(x, f, w, b, **opts), tf_fwd(*t[:4]).numpy())
    for name, a, r in zip(("grad_x", "grad_guide", "grad_weight", "grad_bias"),
                          numvox.pac_conv_transpose_backward(go, x, f, w, **opts), tf_fb(*t)[1:]):
        _check(f"{label} {name}", a, r.numpy())

    def nv_fb():
        numvox.pac_conv_transpose(x, f, w, b, **opts)
        return numvox.pac_conv_transpose_backward(go, x, f, w, **opts)

    desc = (f"N={cfg['N']}, {'×'.join(map(str, cfg['s']))} → {'×'.join(map(str, S))}, C=O={cfg['C']}, "
            f"F={cfg['F']}, {'×'.join(map(str, cfg['k']))}")
    yield Case(f"transposed PAC {label} forward ({desc})",
               numvox=lambda: numvox.pac_conv_transpose(x, f, w, b, **opts),
               baselines=[Baseline("TF im2col transposed PAC (zero-insert, extract_patches, einsum)",
                                   lambda: tf_fwd(*t[:4]).numpy(), repeat=5)])
    yield Case(f"transposed PAC {label} forward+backward ({desc})", numvox=nv_fb,
               baselines=[Baseline("TF autodiff of the im2col transposed PAC",
                                   lambda: [a.numpy() for a in tf_fb(*t)], repeat=5)])
    if backend == "cpu":
        nf = cpu_seconds(lambda: numvox.pac_conv_transpose(x, f, w, b, **opts))
        tff = cpu_seconds(lambda: tf_fwd(*t[:4]).numpy())
        nb = cpu_seconds(nv_fb)
        tfb = cpu_seconds(lambda: [a.numpy() for a in tf_fb(*t)])
        T = int(np.prod(cfg["k"]))
        patches = _patch_mib(S, cfg["N"], T, cfg["C"] + cfg["F"])
        cpu_lines.append(f"| transposed {label} ({desc}) | {nf * 1e3:.1f} ms | {tff * 1e3:.1f} ms | {tff / nf:.2f}× | "
                         f"{nb * 1e3:.1f} ms | {tfb * 1e3:.1f} ms | {tfb / nb:.2f}× | {patches:.0f} MiB |")


def _pool_cases(tf, numvox, cfg, backend):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((cfg["N"], *cfg["S"], cfg["C"])).astype(np.float32)
    f = (0.5 * rng.standard_normal((cfg["N"], *cfg["S"], cfg["F"]))).astype(np.float32)
    pool = _tf_pool(tf, cfg["k"])
    tx, tfg = tf.constant(x), tf.constant(f)
    opts = dict(padding="same", backend=backend)
    _check("pooling", numvox.pac_pool(x, f, cfg["k"], **opts), pool(tx, tfg).numpy())
    desc = f"N={cfg['N']}, {'×'.join(map(str, cfg['S']))}, C={cfg['C']}, F={cfg['F']}, {'×'.join(map(str, cfg['k']))}"
    yield Case(f"PAC pooling 2-D forward ({desc})", numvox=lambda: numvox.pac_pool(x, f, cfg["k"], **opts),
               baselines=[Baseline("TF im2col PAC pooling (extract_patches, Gaussian, sum)",
                                   lambda: pool(tx, tfg).numpy(), repeat=5)])


def cases(quick, backend):
    global NOTES
    import tensorflow as tf

    import numvox

    t2, t3, p2 = _T2, _T3, _P2
    if quick:
        t2, t3, p2 = dict(_T2, N=1, s=(24, 24)), dict(_T3, s=(10, 10, 10)), dict(_P2, N=1, S=(48, 48))
    cpu_lines = []
    yield from _transpose_cases(tf, numvox, t2, "2-D ×2", backend, cpu_lines)
    yield from _transpose_cases(tf, numvox, t3, "3-D ×2", backend, cpu_lines)
    yield from _pool_cases(tf, numvox, p2, backend)
    if cpu_lines:
        NOTES = _BASE_NOTES.rstrip() + (
            "\n\nProcess CPU time (all threads; smallest of 5 calls, after the table, same process):\n\n"
            "| case | numvox fwd | TF fwd | fwd speed-up | numvox fwd+bwd | TF fwd+bwd | fwd+bwd speed-up | "
            "TF patch buffers |\n|---|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(cpu_lines) + "\n"
        )


NOTES = """
Configuration: float32, Gaussian kernel, `normalize=False`.  Transposed 2-D ×2: N=2, 64² →
128², C=O=16, F=8, 5×5, stride 2, padding 2, output_padding 1; 3-D ×2: N=1, 24³ → 48³,
C=O=8, F=4, 3×3×3, stride 2, padding 1, output_padding 1.  Pooling 2-D: N=2, 128², C=16,
F=8, 5×5, `padding="same"`.  "fwd+bwd" is the forward followed by the backward (all
gradients) against `GradientTape` over the TF graph (forward included), same upstream gradient.

numvox's transposed PAC visits only the taps that hit real input pixels: per output row and
column phase (`i mod stride`) it gathers those taps' inputs (about `k^d/stride^d` taps) and
applies the matching rows of the filter with one small GEMM per block of 32 columns, so its
work is that of a plain PAC on the input; the TF baseline builds the zero-inserted input and
patch buffers of the upsampled input and of the guide (`N·S·k^d·(C+F)` floats, the
"TF patch buffers" column) and multiplies the inserted zeros too.  numvox's extra memory is
its outputs plus per-thread scratch (`32·k^d·C` values, `k^d·C·O` weight rows).

CUDA on paper: the pooling and transposed kernels run one thread per output position
(window kernels recomputed, atomics for the scatters), `C·T` (pooling) and `T·C·O/stride^d`
(transposed) FMAs per position: the 2-D ×2 transposed forward is 2·2·128²·7·16·16 ≈ 0.12
GFLOP plus the `T·F` distance terms, a few µs of FP32 work on a current GPU; not measured here.
"""
_BASE_NOTES = NOTES
