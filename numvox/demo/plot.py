"""The demo's figure: an overview of the whole volume, then a close-up of each landmark's heatmap.

Layout (``1 + L`` rows of three panels, ``L`` landmarks):

- overview row: the volume's maximum-intensity projections along ``z`` and along ``y`` with
  every landmark marked and named, and the maximum along ``z`` of all heatmaps together (with
  its colour bar);
- one row per landmark: the volume slice through the landmark (its neighbourhood of
  ±16 voxels, the anatomy's size at the model's training scale) with the close-up window
  outlined, then the heatmap in that window seen along ``z`` and along ``y`` (summed over a
  ±2-voxel slab, so votes that miss the landmark's plane by a little still show), sharing one
  colour bar.  The close-ups draw the true position (green circle), the found one (red plus)
  and an arrow between them, and their titles give the error in voxels.

Voxel centres sit at integer coordinates, as in the landmark coordinates.
"""

import numpy as np

HALF_WINDOW = 3  # close-up half-width in voxels: the votes of a trained model land within ~2
SLAB = 2  # heatmap slab half-thickness summed in the close-ups
CONTEXT = 16  # half-width of the slice panels: the anatomy's size at the model's training scale
AXIS_NAMES = "xyz"
TRUE_STYLE = {"marker": "o", "mfc": "none", "mec": "lime", "mew": 1.5, "ls": "none"}
FOUND_STYLE = {"marker": "+", "color": "red", "mew": 1.5, "ls": "none"}


def _extent(lo, hi):
    """imshow extent for voxels ``lo[i] .. hi[i] - 1`` of two axes (centres at integers)."""
    return (lo[0] - 0.5, hi[0] - 0.5, lo[1] - 0.5, hi[1] - 0.5)


def _centre(true, found, shape):
    """Where a landmark's panels look: the true position, else the found one, else the middle."""
    for p in (true, found):
        if p is not None and np.all(np.isfinite(p)):
            return np.asarray(p, dtype=float)
    return (np.asarray(shape, dtype=float) - 1) / 2


def _mark(ax, true, found, plane, size=12, name=None, legend=False):
    """Draw the true (green o) and found (red +) positions projected on ``plane`` (two axes)."""
    a, b = plane
    if true is not None:
        ax.plot(true[a], true[b], ms=size, label="true" if legend else None, **TRUE_STYLE)
    if found is not None and np.all(np.isfinite(found)):
        ax.plot(found[a], found[b], ms=size, label="found" if legend else None, **FOUND_STYLE)
    if name is not None:
        p = true if true is not None else found
        if p is not None and np.all(np.isfinite(p)):
            ax.annotate(name, (p[a], p[b]), xytext=(7, 5), textcoords="offset points", color="yellow", fontsize=7)


def _label(ax, plane, title):
    ax.set_xlabel(AXIS_NAMES[plane[0]], fontsize=8)
    ax.set_ylabel(AXIS_NAMES[plane[1]], fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)


def _overview(axes, volume, heatmaps, true, found, names, vlim):
    """The overview row: two MIPs with all landmarks, and all heatmaps' maximum along z."""
    for ax, along in zip(axes[:2], (2, 1)):
        plane = tuple(a for a in range(3) if a != along)
        mip = volume.max(axis=along)
        ax.imshow(mip.T, cmap="gray", origin="lower", vmin=vlim[0], vmax=vlim[1], interpolation="nearest",
                  extent=_extent((0, 0), mip.shape))
        for lm, name in enumerate(names):
            _mark(ax, None if true is None else true[lm], found[lm], plane, size=9, name=name, legend=lm == 0)
        _label(ax, plane, f"volume: maximum along {AXIS_NAMES[along]} (all landmarks)")
    ax = axes[2]
    heat = heatmaps.sum(axis=0).max(axis=2)
    im = ax.imshow(heat.T, cmap="magma", origin="lower", interpolation="nearest", extent=_extent((0, 0), heat.shape))
    for lm in range(len(names)):
        _mark(ax, None if true is None else true[lm], found[lm], (0, 1), size=9)
    _label(ax, (0, 1), "all heatmaps: maximum along z")
    ax.figure.colorbar(im, ax=ax, shrink=0.85, label="votes per voxel")
    axes[0].legend(loc="upper right", fontsize=7, framealpha=0.6)


def _closeups(axes, volume, heat, true, found, name, vlim):
    """One landmark's row: its slice with the window outlined, and two heatmap close-ups."""
    shape = np.array(volume.shape)
    centre = _centre(true, found, shape)
    idx = np.clip(np.round(centre).astype(int), 0, shape - 1)
    lo = np.maximum(idx - HALF_WINDOW, 0)
    hi = np.minimum(idx + HALF_WINDOW + 1, shape)
    ax = axes[0]
    c_lo = np.maximum(idx - CONTEXT, 0)
    c_hi = np.minimum(idx + CONTEXT + 1, shape)
    img = volume[c_lo[0]:c_hi[0], c_lo[1]:c_hi[1], idx[2]]
    ax.imshow(img.T, cmap="gray", origin="lower", vmin=vlim[0], vmax=vlim[1], interpolation="nearest",
              extent=_extent(c_lo[:2], c_hi[:2]))
    from matplotlib.patches import Rectangle

    ax.add_patch(Rectangle((lo[0] - 0.5, lo[1] - 0.5), hi[0] - lo[0], hi[1] - lo[1], fill=False, ec="cyan", lw=1.2))
    _mark(ax, true, found, (0, 1), size=9)
    _label(ax, (0, 1), f"{name}: slice z = {idx[2]}")

    views = []
    for along in (2, 1):
        plane = tuple(a for a in range(3) if a != along)
        window = heat[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        s_lo = max(idx[along] - SLAB - lo[along], 0)
        s_hi = min(idx[along] + SLAB + 1 - lo[along], window.shape[along])
        views.append((along, plane, np.take(window, np.arange(s_lo, s_hi), axis=along).sum(axis=along)))
    top = max(max(float(v.max()) for _, _, v in views), 1e-12)
    error = None
    if true is not None and np.all(np.isfinite(found)):
        error = np.asarray(found, dtype=float) - np.asarray(true, dtype=float)
    for ax, (along, plane, view) in zip(axes[1:], views):
        im = ax.imshow(view.T, cmap="magma", origin="lower", vmin=0, vmax=top, interpolation="nearest",
                       extent=_extent((lo[plane[0]], lo[plane[1]]), (hi[plane[0]], hi[plane[1]])))
        _mark(ax, true, found, plane, size=11)
        if error is not None:
            a, b = plane
            ax.annotate("", xy=(found[a], found[b]), xytext=(true[a], true[b]),
                        arrowprops={"arrowstyle": "-|>", "color": "cyan", "lw": 1.5, "shrinkA": 0, "shrinkB": 0})
        what = "" if error is None else f"; error {np.linalg.norm(error):.2f} vox"
        _label(ax, plane, f"{name} heatmap, |{AXIS_NAMES[along]} - {idx[along]}| <= {SLAB}{what}")
    if error is not None:
        axes[1].text(0.02, 0.02, "found - true = (" + ", ".join(f"{e:+.2f}" for e in error) + ")",
                     transform=axes[1].transAxes, color="white", fontsize=7, va="bottom")
    axes[1].figure.colorbar(im, ax=list(axes[1:]), shrink=0.85, label="votes per voxel (slab sum)")


def build_figure(volume, heatmaps, true, found, names, title=""):
    """The demo's figure as a ``matplotlib.figure.Figure`` (see the module docstring).

    Parameters
    ----------
    volume : ndarray, ``(X, Y, Z)``
    heatmaps : ndarray, ``(L, X, Y, Z)``
    true : ndarray ``(L, 3)`` or None
        True landmark positions (None for a user volume).
    found : ndarray, ``(L, 3)``
        Found positions (NaN where a landmark was not found).
    names : sequence of ``L`` str
    title : str

    Returns
    -------
    matplotlib.figure.Figure
        ``3 (L + 1)`` image panels plus ``L + 1`` colour bars.
    """
    from matplotlib.figure import Figure  # no pyplot: works headless, leaves the user's backend alone

    volume = np.asarray(volume, dtype=np.float32)
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    found = np.asarray(found, dtype=float)
    true = None if true is None else np.asarray(true, dtype=float)
    n_lm = heatmaps.shape[0]
    vlim = (float(np.percentile(volume, 1)), float(volume.max()))  # the bright organ is a small fraction
    fig = Figure(figsize=(13.0, 3.9 * (n_lm + 1) + 0.5), layout="constrained")
    axes = fig.subplots(n_lm + 1, 3, squeeze=False)
    _overview(axes[0], volume, heatmaps, true, found, names, vlim)
    for lm in range(n_lm):
        _closeups(axes[lm + 1], volume, heatmaps[lm], None if true is None else true[lm], found[lm], names[lm], vlim)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def save_figure(path, volume, heatmaps, true, found, names, title=""):
    """Write :func:`build_figure`'s figure to ``path`` (PNG) and return ``path``."""
    build_figure(volume, heatmaps, true, found, names, title=title).savefig(path, dpi=80)
    return path
