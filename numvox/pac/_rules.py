"""The PAC family's rules, written once: options, input checks, the window geometry and the
output shapes, used by the public functions (:mod:`numvox.pac._api`) and, through ``OPS``,
by the framework wrappers.  Spatial sizes may be ``None`` (unknown, as in a static graph
shape); the sizes that depend on them come back ``None``."""

import numpy as np

from .._shared.validate import as_int_tuple, check_choice, check_real_dtype

KERNELS = ("gaussian", "inv_{alpha}_{lambda}", "inv_{alpha}_{lambda}_asym")
"""The adaptive kernel kinds (pacnet's ``kernel_type``); an inverse kind may also end in
``_fixed``: the Keras layers train alpha and lambda of the inverse kinds, except ``_fixed``
ones (the functions take them from ``kernel_params=`` when given, else from the name)."""
PADDINGS = ("same", "valid")


def result_dtype(*dtypes):
    """float64 if any of ``dtypes`` (``None`` entries skipped) is float64, else float32."""
    f64 = any(d is not None and np.dtype(d) == np.float64 for d in dtypes)
    return np.dtype(np.float64 if f64 else np.float32)


def parse_kernel(kernel):
    """``(kind, alpha, lambda, asym, fixed)`` of a kernel name: kind ``"gaussian"`` or
    ``"inv"`` (``K = alpha + (sum(Delta**2) + 1e-4) ** (lambda/2)``, ``Delta`` rectified
    for ``_asym``); alpha and lambda are ``None`` for the Gaussian."""
    if kernel == "gaussian":
        return "gaussian", None, None, False, False
    parts = kernel.split("_") if isinstance(kernel, str) else []
    flags = parts[3:]
    if len(parts) >= 3 and parts[0] == "inv" and len(set(flags)) == len(flags) and set(flags) <= {"asym", "fixed"}:
        try:
            alpha, lam = float(parts[1]), float(parts[2])
        except ValueError:
            alpha = lam = float("nan")
        if np.isfinite(alpha) and np.isfinite(lam):
            return "inv", alpha, lam, "asym" in flags, "fixed" in flags
    raise ValueError(
        f"kernel must be one of {', '.join(map(repr, KERNELS))} (alpha, lambda: finite numbers; an inverse "
        f"kind may end in '_fixed'); got {kernel!r}"
    )


def kernel_params(kernel, alpha=None, lam=None):
    """The float64 array ``[kind, alpha, lambda, asym]`` the kernels read (kind 0: Gaussian,
    1: inverse; see :mod:`numvox.pac._kinds`, which also has an internal kind 2).
    ``alpha``/``lam`` override the name's values."""
    kind, a, b, asym, _ = parse_kernel(kernel)
    if kind == "gaussian":
        return np.zeros(4, np.float64)
    a = a if alpha is None else float(alpha)
    b = b if lam is None else float(lam)
    return np.array([1.0, a, b, 1.0 if asym else 0.0], np.float64)


def check_options(kernel, normalize, params=None, params_grad=False):
    """The ``kernel``, ``normalize``, ``kernel_params`` (``params``: a host array or None) and
    ``kernel_params_grad`` options of the public functions; returns :func:`kernel_params` of
    ``kernel`` with ``params``' alpha and lambda when given."""
    kind = parse_kernel(kernel)[0]
    if not isinstance(normalize, (bool, np.bool_)):
        raise TypeError(f"normalize must be True or False; got {normalize!r}")
    if not isinstance(params_grad, (bool, np.bool_)):
        raise TypeError(f"kernel_params_grad must be True or False; got {params_grad!r}")
    if kind != "inv" and (params is not None or params_grad):
        raise ValueError(
            f"kernel_params and kernel_params_grad belong to the inverse kernels ('inv_{{alpha}}_{{lambda}}'); "
            f"got kernel={kernel!r}"
        )
    if params is None:
        return kernel_params(kernel)
    check_real_dtype(params, "kernel_params")
    if tuple(params.shape) != (2,):
        raise ValueError(f"kernel_params has shape {tuple(params.shape)}; expected (2,): [alpha, lambda]")
    alpha, lam = np.asarray(params, np.float64)
    if not (np.isfinite(alpha) and np.isfinite(lam)):
        raise ValueError(f"kernel_params must be finite; got [{alpha}, {lam}]")
    return kernel_params(kernel, alpha, lam)


def check_inputs(x, guide, weight, bias, grad_out=None, same_size=True):
    """Shapes and dtypes; returns the number of spatial axes d (2 or 3).  ``same_size``:
    ``x`` and ``guide`` must agree in spatial size (else only in batch size)."""
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
    if tuple(x.shape[:-1] if same_size else x.shape[:1]) != tuple(guide.shape[:-1] if same_size else guide.shape[:1]):
        raise ValueError(
            f"x and guide must agree in batch{' and spatial' if same_size else ''} size: x has {tuple(x.shape)}, "
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


def check_pool_inputs(x, guide, channel_wise, grad_out=None):
    """Shapes and dtypes of :func:`numvox.pac_pool`'s arrays; returns d (2 or 3)."""
    for a, name in ((x, "x"), (guide, "guide"), (grad_out, "grad_out")):
        if a is not None:
            check_real_dtype(a, name, allow_int=False)
    if len(x.shape) not in (4, 5):
        raise ValueError(f"x has shape {tuple(x.shape)}; expected (N, H, W, C) or (N, D, H, W, C)")
    if tuple(x.shape[:-1]) != tuple(guide.shape[:-1]) or len(guide.shape) != len(x.shape):
        raise ValueError(
            f"x and guide must agree in batch and spatial size: x has {tuple(x.shape)}, "
            f"guide has {tuple(guide.shape)}"
        )
    if not isinstance(channel_wise, (bool, np.bool_)):
        raise TypeError(f"channel_wise must be True or False; got {channel_wise!r}")
    if channel_wise and guide.shape[-1] != x.shape[-1]:
        raise ValueError(
            f"channel_wise=True needs one guide feature per channel: guide has {guide.shape[-1]} "
            f"features (shape {tuple(guide.shape)}), x has {x.shape[-1]} channels (shape {tuple(x.shape)})"
        )
    return len(x.shape) - 2


def pool_output_shape(x_shape, kernel_size, stride=1, padding=0, dilation=1):
    """Shape of :func:`numvox.pac_pool`'s result, ``[N, *S_out, C]`` (``None`` where unknown)."""
    if x_shape is None:
        return None
    x_shape = list(x_shape)
    d = len(x_shape) - 2
    ksize = as_int_tuple(kernel_size, d, "kernel_size", minimum=1)
    return output_shape(x_shape, ksize, stride, padding, dilation, x_shape[-1])


def transpose_geometry(spatial, ksize, stride, padding, output_padding, dilation):
    """``(stride, P, half, dilation, out_spatial)`` of a transposed PAC, as tuples, checked.

    The zero-inserted input is padded by ``P = (k-1)*dilation - padding`` before (and
    ``P + output_padding`` after); the guide window of output ``i`` starts at
    ``i - half``, ``half = (k-1)*dilation//2``; ``out = (s-1)*stride - 2*padding +
    dilation*(k-1) + 1 + output_padding`` (``None`` where ``s`` or ``k`` is ``None``).
    """
    d = len(ksize)
    stride = as_int_tuple(stride, d, "stride", minimum=1)
    dilation = as_int_tuple(dilation, d, "dilation", minimum=1)
    if isinstance(padding, str):
        raise ValueError(f"padding of a transposed PAC must be an int or one int per axis; got {padding!r}")
    padding = as_int_tuple(padding, d, "padding", minimum=0)
    output_padding = as_int_tuple(output_padding, d, "output_padding", minimum=0)
    for op, s_, dl in zip(output_padding, stride, dilation):
        if op >= max(s_, dl):
            raise ValueError(
                f"output_padding {output_padding} must be smaller than the stride {stride} or the dilation "
                f"{dilation} along each axis"
            )
    P = tuple(None if k is None else (k - 1) * dl - p for k, dl, p in zip(ksize, dilation, padding))
    half = tuple(None if k is None else (k - 1) * dl // 2 for k, dl in zip(ksize, dilation))
    out = tuple(None if s_ is None or k is None else (s_ - 1) * st - 2 * p + dl * (k - 1) + 1 + op
                for s_, k, st, p, op, dl in zip(spatial, ksize, stride, padding, output_padding, dilation))
    if any(o is not None and o < 1 for o in out):
        raise ValueError(
            f"a transposed PAC of input {tuple(spatial)} with kernel {tuple(ksize)}, stride {stride}, padding "
            f"{padding}, dilation {dilation} has an empty output {out}; use less padding"
        )
    return stride, P, half, dilation, out


def transpose_output_shape(x_shape, kernel_size, stride=1, padding=0, output_padding=0, dilation=1, filters=None):
    """Shape of :func:`numvox.pac_conv_transpose`'s result, ``[N, *S, filters]`` (``None``
    where unknown): ``S = (s-1)*stride - 2*padding + dilation*(k-1) + 1 + output_padding``."""
    if x_shape is None or kernel_size is None:
        return None
    x_shape, kernel_size = list(x_shape), list(kernel_size)
    d = len(kernel_size)
    *_, out = transpose_geometry(x_shape[1:1 + d], kernel_size, stride, padding, output_padding, dilation)
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


def _params_grad_spec(options, dtype):
    """The ``(2,)`` gradient of ``kernel_params`` when ``kernel_params_grad`` asks for it."""
    return [([2], dtype)] if options.get("kernel_params_grad") else []


def pac_backward_output_specs(shapes, dtypes, options):
    """``pac_conv_backward``: the shapes of ``x``, ``guide``, ``weight`` and ``(O,)`` (and
    ``(2,)`` with ``kernel_params_grad``); the dtype as :func:`pac_output_specs`."""
    dtype = _spec_dtype(dtypes)
    w = shapes["weight"]
    return [
        (shapes["x"], dtype),
        (shapes["guide"], dtype),
        (w, dtype),
        (None if w is None else [w[-1]], dtype),
    ] + _params_grad_spec(options, dtype)


def pool_output_specs(shapes, dtypes, options):
    """``pac_pool``: ``(N, *S_out, C)``, float64 if ``x`` or ``guide`` is float64, else float32."""
    dtype = _spec_dtype(dtypes)
    shape = pool_output_shape(shapes["x"], options["kernel_size"], options.get("stride", 1),
                              options.get("padding", 0), options.get("dilation", 1))
    return [(shape, dtype)]


def pool_backward_output_specs(shapes, dtypes, options):
    """``pac_pool_backward``: the shapes of ``x`` and ``guide`` (and ``(2,)`` with
    ``kernel_params_grad``)."""
    dtype = _spec_dtype(dtypes)
    return [(shapes["x"], dtype), (shapes["guide"], dtype)] + _params_grad_spec(options, dtype)


def transpose_output_specs(shapes, dtypes, options):
    """``pac_conv_transpose``: ``(N, *S, O)`` (see :func:`transpose_output_shape`), dtype as
    :func:`pac_output_specs`."""
    x, w = shapes["x"], shapes["weight"]
    dtype = _spec_dtype(dtypes)
    if x is None or w is None:
        return [(None, dtype)]
    shape = transpose_output_shape(x, w[:-2], options.get("stride", 1), options.get("padding", 0),
                                   options.get("output_padding", 0), options.get("dilation", 1), w[-1])
    return [(shape, dtype)]
