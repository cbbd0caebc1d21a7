"""numvox._shared.blas: OpenBLAS held on one thread while parallel kernels call it."""

import threading

import numpy as np
import pytest

from numvox._shared import blas


def _threads():
    return [getter() for _, getter in blas._find_controls()]


def test_single_threaded_blas_sets_and_restores():
    if not blas._find_controls():
        pytest.skip("no OpenBLAS loaded in this process")
    before = _threads()
    with blas.single_threaded_blas():
        assert _threads() == [1] * len(before)
        with blas.single_threaded_blas():  # re-entrant
            assert _threads() == [1] * len(before)
        assert _threads() == [1] * len(before)
    assert _threads() == before


def test_single_threaded_blas_restores_after_an_error_and_across_threads():
    if not blas._find_controls():
        pytest.skip("no OpenBLAS loaded in this process")
    before = _threads()
    with pytest.raises(RuntimeError):
        with blas.single_threaded_blas():
            raise RuntimeError("boom")
    assert _threads() == before
    errors = []

    def work():
        try:
            for _ in range(20):
                with blas.single_threaded_blas():
                    np.dot(np.ones((64, 64)), np.ones((64, 64)))
        except Exception as e:  # pragma: no cover
            errors.append(e)

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors and _threads() == before
