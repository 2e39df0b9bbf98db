import numba
import numpy as np
import pytest

from xrmeta import threads


@threads.parallel_and_serial(cache=False)
def _sum_rows(a):
    out = np.zeros(a.shape[0])
    for i in numba.prange(a.shape[0]):
        out[i] = a[i].sum()
    return out


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", None, True])
def test_bad_threads_are_refused(bad):
    with pytest.raises(ValueError, match="threads must be"):
        threads.resolve(bad)


def test_all_cores_and_caps():
    cores = threads.CORES
    assert cores >= 1
    assert threads.resolve(-1) == cores
    assert threads.resolve(1) == 1
    assert threads.resolve(10_000) == cores


def test_serial_and_parallel_builds_agree_and_restore_the_thread_count():
    a = np.random.default_rng(0).random((50, 7))
    before = numba.get_num_threads()
    one = threads.run(_sum_rows, 1, a)
    every = threads.run(_sum_rows, -1, a)
    np.testing.assert_allclose(one, a.sum(axis=1))
    np.testing.assert_allclose(every, one)
    assert numba.get_num_threads() == before
    with pytest.raises(ValueError):
        threads.run(_sum_rows, 0, a)
