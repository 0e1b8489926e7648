"""ONNX export of our modules (dynamo exporter + sparse_engine.io.export's translation table),
checked by running the ONNX graph in onnxruntime against PyTorch; TorchScript and the legacy
exporter refused with a message saying what to use instead."""
import warnings

import numpy as np
import onnxruntime as ort  # the test extra installs onnx, onnxscript and onnxruntime
import pytest
import torch
from torch import nn

from sparse_engine import SparseWeight
from sparse_engine.io.export import NO_TORCHSCRIPT, onnx_translation_table
from sparse_engine.nn import (SparseCTRNN, SparseGRU, SparseGRUCell, SparseLinear, SparseLSTM, SparseLSTMCell,
                              SparseRNN, SparseRNNCell)
from sparse_engine.testing import random_weight


def export(model, args, dense=False, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.onnx.export(model, args, dynamo=True, custom_translation_table=onnx_translation_table(dense),
                                 verbose=False, **kwargs)


def run_onnx(model, args, tmp_path, dense=False):
    """Exports ``model`` with our translation table, runs it in onnxruntime: its outputs (flat)."""
    program = export(model, args, dense)
    path = tmp_path / "model.onnx"
    program.save(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args)}
    return sess.run(None, feeds)


def flat(out):
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in flat(o)]


def check_same(model, args, tmp_path, dense=False):
    model.eval()
    with torch.no_grad():
        ref = flat(model(*args))
    got = run_onnx(model, args, tmp_path, dense)
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r.numpy(), rtol=1e-5, atol=1e-5)
    return got


def _awkward(module, seed):
    """Gives every SparseWeight of ``module`` empty rows, a full row and seeded values."""
    for name, w in list(module.named_modules()):
        if isinstance(w, SparseWeight):
            rows, cols = w.shape
            new = random_weight(rows, cols, 0.3, empty_rows=min(3, rows - 1), full_rows=1, seed=seed,
                                dtype=w.values.dtype)
            w.set_pattern(new.row_ptr, new.col_idx, new.values.detach())
    return module


LAYERS = {
    "lstm2": lambda: SparseLSTM(5, 6, num_layers=2),
    "gru-bi": lambda: SparseGRU(5, 6, bidirectional=True),
    "gru-nobias": lambda: SparseGRU(5, 6, bias=False),
    "rnn-relu-bf": lambda: SparseRNN(5, 6, nonlinearity="relu", batch_first=True),
    "rnn-recurrent": lambda: SparseRNN(5, 6, sparse="recurrent"),
    "ctrnn": lambda: SparseCTRNN(5, 6),
}
# the fused step ops (translated by the table) for every cell; the composed steps (spmm and
# torch's elementwise ops) and the dense products for a few
CASES = ([(name, True, False) for name in LAYERS] + [("lstm2", False, False), ("gru-bi", False, False)]
         + [("lstm2", True, True), ("ctrnn", True, True)])


@pytest.mark.parametrize("name, fused, dense", CASES, ids=[f"{n}-fused{f}-dense{d}" for n, f, d in CASES])
def test_layers_export_and_match_torch(name, fused, dense, tmp_path):
    torch.manual_seed(0)
    model = _awkward(LAYERS[name](), seed=1)
    model.fused = fused
    x = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(2))
    check_same(model, (x,), tmp_path, dense)


def test_states_given_and_batch_one(tmp_path):
    torch.manual_seed(0)
    model = _awkward(SparseLSTM(5, 6, num_layers=2), seed=3)
    g = torch.Generator().manual_seed(4)
    x, h, c = torch.randn(3, 1, 5, generator=g), torch.randn(2, 1, 6, generator=g), torch.randn(2, 1, 6, generator=g)

    class WithState(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = model

        def forward(self, x, h, c):
            return self.lstm(x, (h, c))

    check_same(WithState(), (x, h, c), tmp_path)


@pytest.mark.parametrize("make", [lambda: SparseLSTMCell(5, 6), lambda: SparseGRUCell(5, 6),
                                  lambda: SparseRNNCell(5, 6), lambda: SparseLinear(5, 6)],
                         ids=["lstm-cell", "gru-cell", "rnn-cell", "linear"])
def test_cells_and_linear_export(make, tmp_path):
    torch.manual_seed(0)
    model = _awkward(make(), seed=5)
    check_same(model, (torch.randn(2, 5, generator=torch.Generator().manual_seed(6)),), tmp_path)


@pytest.mark.parametrize("dense", [False, True])
def test_exported_graph_is_sparse_unless_asked(dense, tmp_path):
    """No initializer of the default graph is as large as a dense weight: the matrices travel as
    CSR, and the products are gather/scatter; dense=True multiplies dense matrices with MatMul."""
    import onnx

    torch.manual_seed(0)
    model = SparseLSTM(40, 50, density=0.05).eval()
    export(model, (torch.randn(2, 1, 40),), dense).save(str(tmp_path / "m.onnx"))
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    sizes = [int(np.prod(t.dims)) for t in graph.initializer]
    if dense:  # the dense matrices, folded from the CSR at export
        assert 200 * 40 in sizes and 200 * 50 in sizes
    else:  # the largest are the CSR arrays: a dense W_ih would hold 200 x 40 entries
        assert max(sizes) < 200 * 40
        assert sum(sizes) >= model.weight_ih_l0.nnz + model.weight_hh_l0.nnz
    ops = {n.op_type for n in graph.node} | {n.op_type for f in onnx.load(str(tmp_path / "m.onnx")).functions
                                             for n in f.node}
    assert ("MatMul" in ops) is dense


# --------------------------------------------------------------- refusals
def _lstm_model():
    return nn.Sequential(nn.Linear(3, 4), SparseLSTM(4, 5, density=0.5))


@pytest.mark.parametrize("module", [lambda: SparseLSTM(4, 5, density=0.5), lambda: SparseGRUCell(4, 5),
                                    lambda: SparseLinear(4, 5), _lstm_model])
def test_jit_script_refused_with_what_to_use(module):
    with pytest.raises(RuntimeError, match=r"TorchScript.*torch\.compile.*onnx_translation_table"):
        torch.jit.script(module())


@pytest.mark.parametrize("make, x", [(lambda: SparseLSTM(4, 5, density=0.5), torch.randn(3, 2, 4)),
                                     (lambda: SparseRNNCell(4, 5), torch.randn(2, 4))])
def test_jit_trace_refused_with_what_to_use(make, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError) as err:
            torch.jit.trace(make(), x)
    assert str(err.value) == NO_TORCHSCRIPT


def test_legacy_onnx_exporter_refused_with_what_to_use(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match=r"legacy.*dynamo=True.*onnx_translation_table"):
            torch.onnx.export(SparseLSTM(4, 5, density=0.5), (torch.randn(3, 2, 4),), str(tmp_path / "m.onnx"),
                              dynamo=False)
    # after the refusal the flag is reset: state_dict works again
    assert "weight_ih_l0._extra_state" in SparseLSTM(4, 5, density=0.5).state_dict()


@pytest.mark.parametrize("make", [lambda: SparseGRU(5, 6, num_layers=2), lambda: SparseLinear(5, 6)],
                         ids=["gru", "linear"])
def test_dynamic_batch_size(make, tmp_path):
    """The batch dimension may be dynamic (the step count is fixed by the unrolled recurrence)."""
    torch.manual_seed(0)
    model = _awkward(make(), seed=7).eval()
    recurrent = isinstance(model, SparseGRU)
    x = torch.randn((4, 2, 5) if recurrent else (2, 5))
    dims = ({1 if recurrent else 0: torch.export.Dim("batch")},)
    export(model, (x,), dynamic_shapes=dims).save(str(tmp_path / "m.onnx"))
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        x = torch.randn((4, batch, 5) if recurrent else (batch, 5), generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            ref = flat(model(x))
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
        for g, r in zip(got, ref):
            np.testing.assert_allclose(g, r.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("compute", ["auto", "persistent", "dense"])
def test_export_under_every_compute_setting(compute, tmp_path):
    """The modules' own compute settings (the test suite runs with SPARSE_ENGINE_COMPUTE=sparse):
    under auto an eval-mode LSTM takes the whole-sequence op, which has no ONNX translation, and the
    export failed ("No ONNX function found for sparse_engine.rnn_sequence"); while torch.export
    traces, the per-step ops are recorded instead (the same numbers)."""
    torch.manual_seed(0)
    model = SparseLSTM(6, 12, density=0.3, compute=compute)
    check_same(model, (torch.randn(5, 8, 6),), tmp_path)
