"""runtime.threads.one_thread_here: the calling thread's torch ops on one thread for a block, other threads
and the thread count after it untouched (the dense path's scope, sparse_engine/recurrent/compute_paths.py)."""
import threading

import pytest
import torch

from sparse_engine.runtime.threads import one_thread_here
from sparse_engine.testing import num_threads


def _in_a_new_thread(fn):
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    return out[0]


def test_one_thread_here_lowers_only_the_calling_threads_count_and_restores_it():
    with num_threads(2):
        with one_thread_here():
            assert torch.get_num_threads() == 1
            assert _in_a_new_thread(torch.get_num_threads) == 2  # a thread first using torch meanwhile
            x = torch.randn(300, 300)
            torch.testing.assert_close(x @ x, (x.double() @ x.double()).float(), rtol=1e-4, atol=1e-3)
            with one_thread_here():  # nested: the inner one restores the outer one's count
                assert torch.get_num_threads() == 1
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError, match="inside"), one_thread_here():
            raise RuntimeError("inside")
        assert torch.get_num_threads() == 2
        assert _in_a_new_thread(torch.get_num_threads) == 2


def test_one_thread_here_in_a_thread_that_never_used_torch():
    """torch sets a thread's count at its first use; the scope must not be undone by that."""
    def run():
        with one_thread_here():
            inside = torch.get_num_threads()
        return inside, torch.get_num_threads()
    with num_threads(2):
        assert _in_a_new_thread(run) == (1, 2)
