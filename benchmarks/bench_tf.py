"""numvox vote aggregation on TensorFlow model outputs vs a pure-TensorFlow implementation.

Both sides start from the same eager TF tensors (a landmark model's ``probs`` and
``offsets``) and end with a TF tensor of heatmaps ``(L, X, Y, Z)``, in one process.
"""

import numpy as np

from ._harness import Baseline, Case

SECTION = "TensorFlow integration: vote aggregation on TF outputs"
NOTES = """\
numvox side: `numvox.tf.aggregate_votes(probs, offsets, threshold=0.5, splat="nearest")` on
eager CPU tensors: TF tensor → DLPack → NumPy view (no copy) → Numba kernel → DLPack → TF
tensor (no copy).  The *zero-copy* note of each eager case is checked in the run itself:
the data pointers of the arrays the kernel reads are compared with those of TensorFlow's
tensors (`np.from_dlpack`), and the result tensor's pointer with the kernel's output
buffer.  The "in tf.function" case wraps the same call in a `tf.function` (a
`tf.numpy_function` node: inputs still arrive as views, the heatmaps are copied once into
TF's output tensor).  Baseline: `baselines_tf.tf_aggregate_votes`, seed 000's
`tf.where` + `tf.gather_nd` filter followed by `tf.tensor_scatter_nd_add`, as a
`tf.function` (it cannot be XLA-compiled: `tf.where` has a data-dependent shape); the same
nearest-voxel semantics, and the two results agree (max difference in the notes column).
Inputs: `baselines_tf.realistic_outputs` (L = 3, ~10 % of voxels vote, offsets pointing at
the landmarks with 1 voxel of noise).

Where the time goes: the numvox side is the `aggregate_votes` CPU kernel itself (the
wrapper adds microseconds and no copies), so its ratio to the TF implementation follows the
kernel's ratio to the read floor (the "read floor" rows: both inputs summed once with
NumPy through the same zero-copy views; NumPy's float16 sum is slow, so the float16 "read
floor" ratio flatters numvox); see the vote-aggregation section for the kernel's own
numbers.  This 2-core VM shares its host with other jobs: identical runs minutes apart
differ by up to +-25 % (more for the medians of Numba's multi-threaded calls), so read each
ratio as one sample.

CUDA path on paper (not measured: no GPU here): at 256³, L = 3, float32, the kernel reads the
probabilities once (256³ · 4 · 4 B = 268 MB), the offsets only of the ~10 % voting voxels
(spatially clustered, so ≈ 60 MB of 36-byte rows), and zeroes/writes 201 MB of heatmaps:
≈ 0.53 GB, ≈ 0.2 ms at an H100's ~3 TB/s.  Since all votes of a landmark land on a few
voxels, the `cuda.atomic.add`s to those addresses serialise in L2 (≈ 1.6 M votes per
landmark); expect that, not bandwidth, to dominate (order 1 ms).  The eager GPU path adds no
copies (DLPack both ways) but two device-wide synchronisations (see `numvox.tf`).
"""


def _pointer(a):
    return a.__array_interface__["data"][0]


def zero_copy_check(P, O, **kw):
    """Run numvox.tf.aggregate_votes once and compare data pointers; return a short note."""
    import numvox.tf as ntf
    from numvox._shared import arrays

    seen_in, seen_out = [], []
    to_host, from_kernel = arrays.to_host, arrays.from_kernel

    def spy_in(obj, kind=None):
        res = to_host(obj, kind)
        seen_in.append(_pointer(res))
        return res

    def spy_out(result, like):
        seen_out.append(_pointer(result))
        return from_kernel(result, like)

    arrays.to_host, arrays.from_kernel = spy_in, spy_out
    try:
        heat = ntf.aggregate_votes(P, O, **kw)
    finally:
        arrays.to_host, arrays.from_kernel = to_host, from_kernel
    tf_in = [_pointer(np.from_dlpack(t)) for t in (P, O)]
    ok_in = seen_in == tf_in
    ok_out = bool(seen_out) and _pointer(np.from_dlpack(heat)) == seen_out[0]
    return (f"zero-copy in: {'yes' if ok_in else 'NO'} (kernel reads 0x{seen_in[0]:x}, TF probs at 0x{tf_in[0]:x}); "
            f"out: {'yes' if ok_out else 'NO'}"), heat


def cases(quick, backend):
    import tensorflow as tf

    import numvox.tf as ntf

    from .baselines_tf import realistic_outputs, tf_aggregate_votes

    sizes = [64, 96] if quick else [128, 256]
    for n in sizes:
        for dtype in (np.float32, np.float16):
            if dtype == np.float16 and n != sizes[-1]:
                continue
            p, o, _ = realistic_outputs(n, seed=n, dtype=dtype)
            P, O = tf.constant(p), tf.constant(o)
            del p, o
            note, heat = zero_copy_check(P, O, threshold=0.5, splat="nearest")
            ref = tf_aggregate_votes(P, O, 0.5)
            diff = float(tf.reduce_max(tf.abs(heat - ref)) / tf.reduce_max(ref))
            voters = float(tf.reduce_mean(tf.cast(P[..., 1:] >= 0.5, tf.float32))) * 3
            note += f"; {voters:.1%} of voxels vote; max diff vs TF {diff:.1g} of the peak (float32 sum order)"
            p_view, o_view = np.from_dlpack(P), np.from_dlpack(O)
            del heat, ref
            yield Case(
                f"aggregate_votes {n}³ L=3 {np.dtype(dtype).name}, eager TF tensors",
                numvox=lambda P=P, O=O: ntf.aggregate_votes(P, O, threshold=0.5, splat="nearest"),
                baselines=[
                    Baseline("TF tf.where+gather_nd+tensor_scatter_nd_add (tf.function)",
                             lambda P=P, O=O: tf_aggregate_votes(P, O, 0.5).numpy(), repeat=3),
                    Baseline("read floor: probs.sum(); offsets.sum() on the same buffers (NumPy)",
                             lambda a=p_view, b=o_view: (a.sum(), b.sum()), repeat=3,
                             note="not a competitor: the cost of reading both inputs once"),
                ],
                repeat=5,
                note=note,
            )
            if dtype == np.float32 and n == sizes[-1]:
                graph = tf.function(lambda a, b: ntf.aggregate_votes(a, b, threshold=0.5, splat="nearest"))
                yield Case(
                    f"aggregate_votes {n}³ L=3 float32, numvox.tf inside tf.function",
                    numvox=lambda P=P, O=O: graph(P, O).numpy(),
                    baselines=[Baseline("TF tf.where+gather_nd+tensor_scatter_nd_add (tf.function)",
                                        lambda P=P, O=O: tf_aggregate_votes(P, O, 0.5).numpy(), repeat=3)],
                    repeat=5,
                    note="graph mode: tf.numpy_function node, heatmaps copied once into TF's output",
                )
