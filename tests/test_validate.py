import numpy as np
import pytest

from numvox._shared import validate as v


def test_real_dtype():
    v.check_real_dtype(np.zeros(2, np.float16), "x")
    v.check_real_dtype(np.zeros(2, np.int16), "x")
    with pytest.raises(TypeError, match="x has dtype complex128; expected a real floating or integer dtype"):
        v.check_real_dtype(np.zeros(2, complex), "x")
    with pytest.raises(TypeError, match="expected a real floating dtype"):
        v.check_real_dtype(np.zeros(2, np.int32), "x", allow_int=False)
    with pytest.raises(TypeError, match="dtype <U1"):
        v.check_real_dtype(np.array(["a"]), "x")


def test_ndim_choice_number():
    with pytest.raises(ValueError, match=r"vol has shape \(2, 2\) \(2-D\); expected 3-D"):
        v.check_ndim(np.zeros((2, 2)), "vol", 3)
    assert v.check_choice("same", "mode", ("same", "valid")) == "same"
    with pytest.raises(ValueError, match="mode must be one of 'same', 'valid'; got 'sam'"):
        v.check_choice("sam", "mode", ("same", "valid"))
    assert v.check_number(0.5, "threshold", minimum=0) == 0.5
    for bad, exc in [(np.nan, ValueError), ("1", TypeError), (True, TypeError), (-1, ValueError)]:
        with pytest.raises(exc, match="threshold"):
            v.check_number(bad, "threshold", minimum=0)
    with pytest.raises(TypeError, match="an integer"):
        v.check_number(1.5, "radius", integer=True)


def test_int_tuple_and_same_shape():
    assert v.as_int_tuple(2, 3, "stride") == (2, 2, 2)
    assert v.as_int_tuple((1, 2), 2, "stride", minimum=1) == (1, 2)
    with pytest.raises(ValueError, match="2 entries"):
        v.as_int_tuple((1, 2, 3), 2, "stride")
    with pytest.raises(ValueError, match=">= 1"):
        v.as_int_tuple(0, 2, "stride", minimum=1)
    with pytest.raises(TypeError, match="ints"):
        v.as_int_tuple((1.5, 2), 2, "stride")
    with pytest.raises(ValueError, match=r"a and b must agree in shape \[:-1\]"):
        v.check_same_shape(np.zeros((2, 3, 1)), np.zeros((2, 4, 1)), "a", "b", slice(None, -1))


def test_huge_integers_are_numbers_not_crashes():
    # beyond int64-safe arithmetic: a clear ValueError (never OverflowError), or, for
    # arguments where "larger than anything" has a meaning, clipped
    with pytest.raises(ValueError, match="radius must be an integer within"):
        v.check_number(10**30, "radius", integer=True, minimum=0)
    assert v.check_number(10**30, "radius", integer=True, minimum=0, clip=True) == v.MAX_INT
    with pytest.raises(ValueError, match="radius must be <= 5"):
        v.check_number(10**30, "radius", integer=True, maximum=5, clip=True)
    with pytest.raises(ValueError, match="too large for a float64"):
        v.check_number(10**400, "threshold")
