"""torch.compile of the recurrent modules: no graph breaks, ``fullgraph=True`` works forward and
backward with the eager results, and our code issues no warning while compiling. Small shapes
(compiling is slow on a 2-core machine); the ``aot_eager`` backend traces the same graph
(dynamo + AOT autograd through the fake kernels) without inductor's code generation, which one
LSTM case runs as well."""
import warnings

import pytest
import torch

import sparse_engine as se


def build(cls, seed, **kw):
    torch.manual_seed(seed)
    return cls(3, 5, density=0.5, dtype=torch.float64, **kw)


MODULES = [se.nn.SparseLSTM, se.nn.SparseGRU, se.nn.SparseRNN]


@pytest.mark.parametrize("cls", MODULES, ids=lambda c: c.__name__)
def test_no_graph_breaks(cls, rng):
    torch._dynamo.reset()
    m = build(cls, 0, num_layers=2)
    x = torch.randn(4, 2, 3, generator=rng, dtype=torch.float64)
    explained = torch._dynamo.explain(m)(x)
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
    assert explained.graph_count == 1


def ours(caught):
    return [str(w.message) for w in caught if "sparse_engine" in str(w.filename) or "sparse_engine" in str(w.message)
            or "lru_cache" in str(w.message)]


RUNS = [(cls, "aot_eager") for cls in MODULES] + [pytest.param(se.nn.SparseLSTM, "inductor", marks=pytest.mark.slow)]


@pytest.mark.parametrize("cls,backend", RUNS, ids=lambda c: getattr(c, "__name__", c))
def test_fullgraph_forward_backward_match_eager(cls, backend, rng):
    torch._dynamo.reset()
    m, ref = build(cls, 1, bidirectional=True), build(cls, 1, bidirectional=True)
    x = torch.randn(4, 2, 3, generator=rng, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = torch.compile(m, fullgraph=True, backend=backend)
        y = compiled(x)[0]
        y.pow(2).sum().backward()
    assert not ours(caught)
    y_ref = ref(x)[0]
    y_ref.pow(2).sum().backward()
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    for (name, p), q in zip(m.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-10, msg=lambda s: f"{name}: {s}")


def test_compile_takes_the_sparse_path_whatever_compute_says(rng):
    """Dynamo does not trace torch's RNN modules, so a compiled forward never takes the dense path."""
    torch._dynamo.reset()
    m = build(se.nn.SparseLSTM, 2, compute="dense")
    x = torch.randn(4, 2, 3, generator=rng, dtype=torch.float64)
    explained = torch._dynamo.explain(m)(x)
    assert explained.graph_break_count == 0
    torch.testing.assert_close(torch.compile(m, fullgraph=True, backend="aot_eager")(x)[0], m(x)[0],
                               rtol=1e-10, atol=1e-10)
