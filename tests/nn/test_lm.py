"""SparseEmbedding and SparseLanguageModel: the lookup and the tied decoder against dense
references, embedding dropout, the Selfish-RNN controller rewiring every weight, learning on
the tiny corpus (and not with lr 0), round trips and errors."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import sparse_engine as se
from sparse_engine import SparseWeight
from sparse_engine.io.checkpoint import load_checkpoint, save_checkpoint
from sparse_engine.data import batchify, get_batch, tiny_corpus
from sparse_engine.nn.blocks import row_lookup
from sparse_engine.nn.lm import detach_state
from sparse_engine.testing import random_weight


@pytest.mark.parametrize("rows,cols,density,empty_rows", [(9, 5, 0.4, 2), (1, 1, 1.0, 0), (6, 7, 0.2, 5)])
def test_row_lookup_matches_dense_rows_and_gradient(rows, cols, density, empty_rows, rng):
    seed = int(torch.randint(0, 2**31, (1,), generator=rng))
    W = random_weight(rows, cols, density, empty_rows=empty_rows, seed=seed)
    ids = torch.randint(0, rows, (3, 4), generator=rng)
    ids[0, :2] = ids[1, 0]  # repeated ids accumulate gradient
    out = row_lookup(W, ids)
    D = W.to_dense().clone().requires_grad_(True)
    ref = D[ids.reshape(-1)]
    torch.testing.assert_close(out, ref.detach(), rtol=0, atol=0)
    G = torch.randn(out.shape, generator=rng, dtype=out.dtype)
    (out * G).sum().backward()
    (ref * G).sum().backward()
    row, col, _ = W.coo()
    torch.testing.assert_close(W.values.grad, D.grad[row, col], rtol=1e-12, atol=1e-12)


def test_row_lookup_gradcheck_and_bad_ids(rng):
    W = random_weight(5, 4, 0.5, seed=int(torch.randint(0, 2**31, (1,), generator=rng)))
    ids = torch.tensor([0, 3, 3, 4])
    v = W.values.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: row_lookup(W, ids, v), (v,))
    with pytest.raises(ValueError, match=r"ids must be in \[0, 5\)"):
        row_lookup(W, torch.tensor([5]))


def test_embedding_dropout_drops_whole_words():
    torch.manual_seed(0)
    emb = se.nn.SparseEmbedding(50, 8, density=1.0, dtype=torch.float64)
    ids = torch.arange(50).repeat(2)
    out = emb(ids, dropout=0.5)
    full = emb(ids)
    zero = (out == 0).all(1)
    assert 0 < int(zero.sum()) < 100
    torch.testing.assert_close(out[~zero], 2 * full[~zero], rtol=1e-12, atol=1e-12)
    assert torch.equal(zero[:50], zero[50:])  # one draw per word, not per occurrence
    with pytest.raises(ValueError, match="dropout"):
        emb(ids, dropout=1.0)
    with pytest.raises(TypeError, match="ids"):
        emb(torch.zeros(3))


def dense_lm_reference(m, tokens):
    """A dense float64 LSTM LM built from the sparse model's matrices (eval, no dropout)."""
    E = m.embedding.weight.to_dense()
    x = E[tokens]
    for layer in m.layers:
        x, _ = layer.to_dense()(x)
    return x @ m.decoder_weight.to_dense().t() + m.decoder_bias


@pytest.mark.parametrize("tie", [False, True])
def test_lstm_lm_matches_dense_reference(tie, rng):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    m = se.nn.SparseLanguageModel(30, 6, 7, num_layers=2, model="lstm", density=0.4, tie_weights=tie,
                                  dtype=torch.float64).eval()
    tokens = torch.randint(0, 30, (5, 3), generator=rng)
    logits, state = m(tokens)
    assert logits.shape == (5, 3, 30) and len(state) == 2
    torch.testing.assert_close(logits, dense_lm_reference(m, tokens).detach(), rtol=1e-10, atol=1e-10)
    names = list(se.training.sparse_weights(m))
    assert names[0] == "embedding.weight" and ("decoder" in names) != tie
    if tie:  # the last layer has embedding_size units so the decoder can be the embedding
        assert m.layers[-1].hidden_size == 6
    m.batch_first = True
    torch.testing.assert_close(m(tokens.t())[0], logits.transpose(0, 1), rtol=0, atol=0)


def test_dropout_options_follow_the_original_per_model():
    lstm = se.nn.SparseLanguageModel(10, 4, 4, 1, "lstm", density=0.5)
    rhn = se.nn.SparseLanguageModel(10, 4, 4, 1, "rhn", density=0.5, dropouth=0.25, depth=2)
    assert not lstm.locked and rhn.locked
    assert rhn.layers[0].dropout_state == 0.25
    with pytest.raises(ValueError, match="model"):
        se.nn.SparseLanguageModel(10, 4, 4, 1, "gru")
    with pytest.raises(ValueError, match="dropouti"):
        se.nn.SparseLanguageModel(10, 4, 4, 1, "lstm", dropouti=1.5)
    with pytest.raises(ValueError, match="tokens must be a 2-D"):
        lstm(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="state must be a list of 1"):
        lstm(torch.zeros(5, 2, dtype=torch.long), [None, None])


@pytest.mark.parametrize("model", ["lstm", "rhn", "onlstm"])
def test_selfish_controller_rewires_every_weight(model):
    torch.manual_seed(1)
    m = se.nn.SparseLanguageModel(40, 8, 8, 2, model, density=0.3, tie_weights=(model == "rhn"), depth=2,
                                  chunk_size=4)
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    ctl = se.training.SelfishRNN(m, opt, total_steps=10, death_rate=0.5, seed=0)
    assert "embedding.weight" in ctl.weights and all(isinstance(w, SparseWeight) for w in ctl.weights.values())
    before = {n: (w.row_ptr.clone(), w.col_idx.clone()) for n, w in ctl.weights.items()}
    tokens = torch.randint(0, 40, (6, 3))
    loss = F.cross_entropy(m(tokens)[0].reshape(-1, 40), torch.randint(0, 40, (18,)))
    loss.backward()
    opt.step()
    ctl.step()
    ctl.end_epoch()
    for n, w in ctl.weights.items():
        r, c = before[n]
        assert w.nnz == c.numel(), n
        assert not (torch.equal(w.row_ptr, r) and torch.equal(w.col_idx, c)), f"{n} was not rewired"
    m(tokens)[0].sum().backward()  # still runs on the new patterns


def train_lm(model, lr, corpus, epochs=2):
    torch.manual_seed(0)
    m = se.nn.SparseLanguageModel(len(corpus), 16, 32, 1, model, density=0.5, tie_weights=(model == "rhn"),
                                  depth=2, chunk_size=4)
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    train = batchify(corpus.train, 8)
    for _ in range(epochs):
        state = None
        for i in range(0, train.shape[0] - 1, 12):
            x, y = get_batch(train, i, 12)
            out, state = m(x, None if state is None else detach_state(state))
            loss = F.cross_entropy(out.reshape(-1, len(corpus)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    m.eval()
    valid = batchify(corpus.valid, 4)
    with torch.no_grad():
        return F.cross_entropy(m(valid[:-1])[0].reshape(-1, len(corpus)), valid[1:].reshape(-1)).item()


@pytest.mark.parametrize("model", ["lstm", "rhn"])
def test_language_model_learns_the_tiny_corpus(model):
    corpus = tiny_corpus((300, 60, 60))
    unigram = math.log(21.0)  # the corpus's unigram perplexity is about 21 (see data/corpus.py)
    trained = train_lm(model, 3e-2, corpus)
    untrained = train_lm(model, 0.0, corpus)
    assert trained < unigram - 0.8  # perplexity under ~9.4: it learned word order, not just counts
    assert untrained > unigram      # lr 0: about log(vocab)


def test_state_dict_and_checkpoint_round_trip_after_rewiring(tmp_path):
    torch.manual_seed(2)
    a = se.nn.SparseLanguageModel(30, 6, 6, 1, "rhn", density=0.4, tie_weights=True, depth=2)
    ctl = se.training.SelfishRNN(a, None, total_steps=5, death_rate=0.5, seed=0)
    ctl.end_epoch()  # patterns now differ from any freshly built model
    b = se.nn.SparseLanguageModel(30, 6, 6, 1, "rhn", density=0.4, tie_weights=True, depth=2)
    tokens = torch.randint(0, 30, (4, 2))
    save_checkpoint(tmp_path / "lm.pt", a)
    load_checkpoint(tmp_path / "lm.pt", b)
    a.eval(), b.eval()
    torch.testing.assert_close(a(tokens)[0], b(tokens)[0], rtol=0, atol=0)
    assert b.decoder_weight is b.embedding.weight


@pytest.mark.parametrize("model,kw", [("lstm", {}), ("rhn", {"depth": 2}), ("onlstm", {"chunk_size": 2})])
def test_language_model_gradcheck(model, kw, rng):
    """The whole model (sparse embedding lookup, recurrent layer, sparse decoder) passes gradcheck
    in float64 with respect to every sparse weight's stored values and the decoder bias."""
    torch.manual_seed(5)
    m = se.nn.SparseLanguageModel(9, 4, 4, num_layers=1, model=model, density=0.5, dtype=torch.float64, **kw).eval()
    tokens = torch.randint(0, 9, (3, 2), generator=rng)
    names = [n for n, _ in m.named_parameters() if n.endswith(".values")] + ["decoder_bias"]
    params = [dict(m.named_parameters())[n].detach().clone().requires_grad_(True) for n in names]
    assert len(names) >= 4  # embedding, the layer's matrices, decoder

    def f(*p):
        return functional_call(m, dict(zip(names, p)), (tokens,))[0]
    assert torch.autograd.gradcheck(f, tuple(params))
