"""The joint-upsampling example (``benchmarks/upsampling.py``) at a tiny size: it trains both
upsamplers, writes its RESULTS.md section and its figure, and its baseline is the bilinear
resize it claims to be."""

import math
import re

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("matplotlib")

from reference import ref_block_mean, ref_linear_upsample2x  # noqa: E402


@pytest.fixture
def upsampling(repo_benchmarks):
    from benchmarks import upsampling

    return upsampling


def test_data_is_piecewise_smooth_with_an_edge_aligned_guide(upsampling):
    rng = np.random.default_rng(3)
    low, guide, truth = upsampling.make_data(rng, upsampling.Case(2, 32, 4, 1, 1), 8)
    assert low.shape == (8, 16, 16, 1) and guide.shape == (8, 32, 32, 3) and truth.shape == (8, 32, 32, 1)
    np.testing.assert_allclose(low, ref_block_mean(truth, 2), rtol=1e-6, atol=1e-7)
    # neighbours whose guide colours agree (one region) differ little in the target: its
    # jumps are at the guide's edges; the guide is not the target (weak correlation)
    same = np.abs(np.diff(guide, axis=1)).max(-1) < 0.15
    step = np.abs(np.diff(truth[..., 0], axis=1))
    assert 0.8 < same.mean() < 0.99
    assert (step[same] > 0.1).mean() < 0.01 and (step[~same] > 0.1).mean() > 0.5
    assert abs(np.corrcoef(guide[..., 0].ravel(), truth.ravel())[0, 1]) < 0.9


@pytest.mark.parametrize("shape", [(2, 5, 7, 1), (1, 4, 4, 3)])
def test_linear_upsample_matches_tf_bilinear(upsampling, shape):
    import tensorflow as tf

    low = np.random.default_rng(0).random(shape).astype(np.float32)
    want = tf.image.resize(low, (2 * shape[1], 2 * shape[2]), "bilinear").numpy()
    np.testing.assert_allclose(upsampling.linear_upsample(low, 2), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("ndim, shape", [(2, (2, 5, 7, 1)), (3, (1, 3, 4, 5, 2)), (3, (2, 1, 2, 6, 1))])
def test_linear_upsample_matches_the_reference(upsampling, ndim, shape):
    low = np.random.default_rng(1).random(shape).astype(np.float32)
    np.testing.assert_allclose(upsampling.linear_upsample(low, ndim), ref_linear_upsample2x(low, ndim),
                               rtol=1e-5, atol=1e-6)
    high = np.random.default_rng(2).random((2,) + tuple(2 * s for s in shape[1:-1]) + shape[-1:])
    np.testing.assert_allclose(upsampling.block_mean(high, ndim), ref_block_mean(high, ndim), rtol=1e-12)


def test_example_writes_its_section_and_figure(upsampling, tmp_path):
    from benchmarks.__main__ import update_results

    tiny = [
        upsampling.Case(2, 16, 8, 4, 1, width=4, guide_features=2, shapes=2),
        upsampling.Case(3, 8, 4, 2, 1, batch=2, width=4, guide_features=2, guide_channels=2, shapes=2),
    ]
    png, results = tmp_path / "upsampling.png", tmp_path / "RESULTS.md"
    results.write_text("# results\n\n<!-- bench:other -->\nkept\n<!-- /bench:other -->\n")
    text = upsampling.section(quick=True, png=png, sizes=tiny, log=lambda s: None)
    update_results("upsampling", text, results)
    written = results.read_text()
    assert "<!-- bench:other -->\nkept\n<!-- /bench:other -->" in written
    block = re.search(r"<!-- bench:upsampling -->\n(.*?)<!-- /bench:upsampling -->", written, re.S).group(1)
    rows = [ln for ln in block.splitlines() if ln.startswith("| 2-D") or ln.startswith("| 3-D")]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        base, pac, ratio = (float(c) for c in cells[2:5])
        assert all(math.isfinite(v) and v > 0 for v in (base, pac, ratio))
        assert ratio == pytest.approx(pac / base, abs=0.006)
    diff = float(re.search(r"largest difference ([-+.e0-9]+)\)", block).group(1))
    assert diff <= 1e-5
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
