"""The PAC family's rules, written once: options, input checks, the window geometry and the
output shapes, used by the public functions (:mod:`numvox.pac._api`) and, through ``OPS``,
by the framework wrappers.  Spatial sizes may be ``None`` (unknown, as in a static graph
shape); the sizes that depend on them come back ``None``."""

import numpy as np

from .._shared.validate import as_int_tuple, check_choice, check_real_dtype

KERNELS = ("gaussian",)
PADDINGS = ("same", "valid")


def result_dtype(*dtypes):
    """float64 if any of ``dtypes`` (``None`` entries skipped) is float64, else float32."""
    f64 = any(d is not None and np.dtype(d) == np.float64 for d in dtypes)
    return np.dtype(np.float64 if f64 else np.float32)


def check_options(kernel, normalize):
    """The ``kernel`` and ``normalize`` options of both public functions."""
    check_choice(kernel, "kernel", KERNELS)
    if not isinstance(normalize, (bool, np.bool_)):
        raise TypeError(f"normalize must be True or False; got {normalize!r}")


def check_inputs(x, guide, weight, bias, grad_out=None):
    """Shapes and dtypes; returns the number of spatial axes d (2 or 3)."""
    for a, name in ((x, "x"), (guide, "guide"), (weight, "weight"), (bias, "bias"), (grad_out, "grad_out")):
        if a is not None:
            check_real_dtype(a, name, allow_int=False)
    if len(weight.shape) not in (4, 5):
        raise ValueError(
            f"weight has shape {tuple(weight.shape)}; expected (kh, kw, C, O) for 2-D or "
            f"(kd, kh, kw, C, O) for 3-D (TensorFlow's filter layout)"
        )
    d = len(weight.shape) - 2
    for a, name, last in ((x, "x", "C"), (guide, "guide", "F")):
        if len(a.shape) != d + 2:
            raise ValueError(
                f"{name} has shape {tuple(a.shape)}; a {d}-D weight {tuple(weight.shape)} needs "
                f"{name} of shape (N, {', '.join('HW' if d == 2 else 'DHW')}, {last}) ({d + 2}-D)"
            )
    if tuple(x.shape[:-1]) != tuple(guide.shape[:-1]):
        raise ValueError(
            f"x and guide must agree in batch and spatial size: x has {tuple(x.shape)}, "
            f"guide has {tuple(guide.shape)}"
        )
    if x.shape[-1] != weight.shape[-2]:
        raise ValueError(
            f"weight has {weight.shape[-2]} input channels (shape {tuple(weight.shape)}) but x has "
            f"{x.shape[-1]} (shape {tuple(x.shape)})"
        )
    if any(k < 1 for k in weight.shape[:d]):
        raise ValueError(f"weight has an empty kernel axis: shape {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (weight.shape[-1],):
        raise ValueError(f"bias has shape {tuple(bias.shape)}; expected ({weight.shape[-1]},) (O of weight)")
    return d


def geometry(spatial, ksize, stride, padding, dilation):
    """``(stride, pad_lo, dilation, out_spatial)`` as tuples of ints, checked.

    ``padding="same"`` pads ``(k-1)*dilation//2`` before and the rest of ``(k-1)*dilation``
    after, so that the output has the input's size at stride 1 (for odd ``k`` both sides get
    ``(k-1)*dilation//2``).  ``"valid"`` pads nothing; an int or per-axis ints pad both sides.
    Along an axis whose input size or kernel size is ``None`` the output size is ``None``
    (and so is the ``"same"`` padding when the kernel size is ``None``).
    """
    d = len(ksize)
    stride = as_int_tuple(stride, d, "stride", minimum=1)
    dilation = as_int_tuple(dilation, d, "dilation", minimum=1)
    extent = tuple(None if k is None else dl * (k - 1) + 1 for k, dl in zip(ksize, dilation))
    if isinstance(padding, str):
        mode = check_choice(padding.lower(), "padding", PADDINGS)
        if mode == "valid":
            lo = hi = (0,) * d
        else:
            lo = tuple(None if e is None else (e - 1) // 2 for e in extent)
            hi = tuple(None if e is None else e - 1 - p for e, p in zip(extent, lo))
    else:
        lo = hi = as_int_tuple(padding, d, "padding", minimum=0)
    known = [s is not None and e is not None for s, e in zip(spatial, extent)]
    padded = tuple(s + a + b if ok else None for s, a, b, ok in zip(spatial, lo, hi, known))
    if any(ok and p < e for ok, p, e in zip(known, padded, extent)):
        raise ValueError(
            f"kernel larger than the padded input: the dilated kernel spans {extent} but the "
            f"padded input is {padded} (input {tuple(spatial)}, padding {padding!r})"
        )
    out = tuple((p - e) // s + 1 if ok else None for p, e, s, ok in zip(padded, extent, stride, known))
    return stride, lo, dilation, out


def output_shape(x_shape, kernel_size, stride=1, padding="same", dilation=1, filters=None):
    """Shape of :func:`numvox.pac_conv`'s result, ``[N, *S_out, filters]``, as a list.

    ``x_shape`` is the shape of ``x`` (``(N, *S, C)``), ``kernel_size`` the spatial kernel
    size (``weight.shape[:-2]``; its length gives 2-D or 3-D), ``filters`` the number of
    output channels ``O``.  Any entry may be ``None`` (unknown); the output sizes that depend
    on it are ``None``.  ``None`` for ``x_shape`` or ``kernel_size`` (unknown rank) gives
    ``None``.  Options are checked as :func:`numvox.pac_conv` checks them.
    """
    if x_shape is None or kernel_size is None:
        return None
    x_shape, kernel_size = list(x_shape), list(kernel_size)
    d = len(kernel_size)
    *_, out = geometry(x_shape[1:1 + d], kernel_size, stride, padding, dilation)
    return [x_shape[0], *out, filters]


# -- output specs: ``numvox._shared.ops.OpSpec.output_specs`` --------------------------------
def _spec_dtype(dtypes):
    # x, guide and weight decide the static result dtype (the wrappers cast to it)
    return result_dtype(*(dtypes.get(n) for n in ("x", "guide", "weight")))


def pac_output_specs(shapes, dtypes, options):
    """``pac_conv``: ``(N, *S_out, O)`` (see :func:`output_shape`), float64 if ``x``,
    ``guide`` or ``weight`` is float64, else float32."""
    x, w = shapes["x"], shapes["weight"]
    dtype = _spec_dtype(dtypes)
    if x is None or w is None:
        return [(None, dtype)]
    shape = output_shape(x, w[:-2], options.get("stride", 1), options.get("padding", "same"),
                         options.get("dilation", 1), w[-1])
    return [(shape, dtype)]


def pac_backward_output_specs(shapes, dtypes, options):
    """``pac_conv_backward``: the shapes of ``x``, ``guide``, ``weight`` and ``(O,)``; the
    dtype as :func:`pac_output_specs`."""
    dtype = _spec_dtype(dtypes)
    w = shapes["weight"]
    return [
        (shapes["x"], dtype),
        (shapes["guide"], dtype),
        (w, dtype),
        (None if w is None else [w[-1]], dtype),
    ]
