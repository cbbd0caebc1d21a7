"""The demo's figure: orthogonal slices through each landmark with the heatmap overlaid."""

import numpy as np


def save_figure(path, volume, heatmaps, true, found, names, title=""):
    """Write a PNG with one row per landmark and one column per axis.

    Each panel is the slice of ``volume`` through the landmark (the true position, or the
    found one when the truth is unknown) perpendicular to that axis, with the landmark's
    heatmap (summed over a ±2-voxel slab, to show votes that miss the slice by a little)
    overlaid (square-root scale); the true position is a green circle, the found one a red plus.
    """
    from matplotlib.figure import Figure  # no pyplot: works headless, leaves the user's backend alone

    n_lm = heatmaps.shape[0]
    fig = Figure(figsize=(9.0, 3.0 * n_lm + 0.4))
    axes = fig.subplots(n_lm, 3, squeeze=False)
    axis_names = "xyz"
    vmin, vmax = np.percentile(volume, [1, 99.5])
    for lm in range(n_lm):
        t = None if true is None else np.asarray(true[lm], dtype=float)
        f = np.asarray(found[lm], dtype=float)
        centre = t if t is not None else f
        if not np.all(np.isfinite(centre)):
            centre = (np.array(volume.shape) - 1) / 2
        idx = np.clip(np.round(centre).astype(int), 0, np.array(volume.shape) - 1)
        for ax_i in range(3):
            ax = axes[lm, ax_i]
            others = [a for a in range(3) if a != ax_i]
            img = np.take(volume, idx[ax_i], axis=ax_i)
            lo, hi = max(idx[ax_i] - 2, 0), min(idx[ax_i] + 3, volume.shape[ax_i])
            heat = np.take(heatmaps[lm], np.arange(lo, hi), axis=ax_i).sum(axis=ax_i)
            # rows = first remaining axis, columns = second (origin lower-left)
            ax.imshow(img.T, cmap="gray", origin="lower", vmin=vmin, vmax=vmax, interpolation="nearest")
            heat = np.sqrt(np.clip(heat, 0, None))  # square-root scale: the spread of weak votes shows too
            top = max(float(heat.max()), 1e-12)
            masked = np.ma.masked_less_equal(heat.T, 0.03 * top)
            ax.imshow(masked, cmap="cool", origin="lower", alpha=0.75, vmin=0, vmax=top, interpolation="nearest")
            if t is not None:
                ax.plot(t[others[0]], t[others[1]], "o", mfc="none", mec="lime", mew=1.5, ms=16, label="true")
            if np.all(np.isfinite(f)):
                ax.plot(f[others[0]], f[others[1]], "+", color="red", mew=1.2, ms=16, label="found")
            ax.set_xlabel(axis_names[others[0]])
            ax.set_ylabel(axis_names[others[1]])
            ax.set_title(f"{names[lm]}: {axis_names[ax_i]} = {idx[ax_i]}", fontsize=9)
            ax.tick_params(labelsize=7)
            if lm == 0 and ax_i == 0:
                ax.legend(loc="upper right", fontsize=7, framealpha=0.6)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path
