"""Word-level language models of Selfish-RNN (Liu et al., ICML 2021): a sparse embedding, a stack
of sparse recurrent layers (LSTM, RHN or ON-LSTM) and a sparse decoder, optionally tied to the
embedding. Every weight matrix is a :class:`~sparse_engine.SparseWeight`, as Selfish-RNN masks
every weight of the model (embedding and decoder included; biases stay dense), so the topology
controllers (:class:`~sparse_engine.training.SelfishRNN`, ...) find and rewire all of them.

The embedding is a (vocab x dim) SparseWeight read by row lookup (:func:`.functional.row_lookup`:
the embedding of word t is row t, and only its stored entries are read); the tied decoder is
``spmm`` with the same weight, logits = E h + b. See docs/models.md for what each option matches
in the original code.
"""
from __future__ import annotations

import torch
from torch import nn

from ..recurrent import matmul
from ..sparse import SparseWeight
from .blocks import locked_dropout, row_lookup
from .onlstm import SparseONLSTM
from .rhn import SparseRHN
from .rnn import SparseLSTM
from .weights import check_dropout, check_positive_int, init_values_uniform, resolve_density

__all__ = ["SparseEmbedding", "SparseLanguageModel", "detach_state"]

MODELS = ("lstm", "rhn", "onlstm")


class SparseEmbedding(nn.Module):
    """``nn.Embedding`` with a (num_embeddings x embedding_dim) CSR weight: ids (*) -> (*, dim).

    ``forward(ids, dropout=p)`` is the embedding dropout of AWD-LSTM / Selfish-RNN
    (``dropoute``): whole words (rows) are dropped with probability p and the rest scaled by
    1/(1-p), one draw per call; pass it only in training."""

    def __init__(self, num_embeddings: int, embedding_dim: int, *, density: float | None = None,
                 epsilon: float | None = None, init_range: float = 0.1, device=None, dtype=None):
        super().__init__()
        check_positive_int("num_embeddings", num_embeddings)
        check_positive_int("embedding_dim", embedding_dim)
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        d = resolve_density(num_embeddings, embedding_dim, density, epsilon)
        w = SparseWeight.random(num_embeddings, embedding_dim, d, dtype=dtype or torch.get_default_dtype())
        self.weight = w.to(device) if device is not None else w
        init_values_uniform(self.weight, init_range)

    def forward(self, ids: torch.Tensor, dropout: float = 0.0) -> torch.Tensor:
        if not isinstance(ids, torch.Tensor) or ids.is_floating_point() or ids.is_complex():
            raise TypeError(f"ids must be an integer torch.Tensor, got "
                            f"{ids.dtype if isinstance(ids, torch.Tensor) else type(ids).__name__}")
        dropout = check_dropout("dropout", dropout)
        out = row_lookup(self.weight, ids)
        if dropout:  # one draw per word (row), so every occurrence of a word is dropped alike
            keep = out.new_empty(self.num_embeddings).bernoulli_(1 - dropout) / (1 - dropout)
            out = out * keep[ids.reshape(-1)][:, None]
        return out.view(*ids.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, density={self.weight.density:.4g}"


def detach_state(state):
    """The recurrent state with its history cut (truncated BPTT between batches)."""
    if isinstance(state, torch.Tensor):
        return state.detach()
    return type(state)(detach_state(s) for s in state)


class SparseLanguageModel(nn.Module):
    """Embedding -> ``num_layers`` sparse recurrent layers -> decoder, all weights sparse.

    ``model``: 'lstm' (Selfish stacked LSTM), 'rhn' (Selfish RHN: one layer per ``num_layers``,
    ``depth``/``couple`` passed on) or 'onlstm' (``chunk_size``/``dropconnect`` passed on).
    ``tie_weights``: the decoder is the embedding matrix (then the last layer has
    ``embedding_size`` units, as AWD-LSTM and Selfish-RNN's RHN do).
    Dropouts (0 = off), named as in Selfish-RNN: ``dropoute`` whole embedding rows; ``dropouti``
    on the embedding output; ``dropouth`` between layers ('lstm', 'onlstm') or on the RHN state
    inside each layer ('rhn', whose layers are separated by ``dropout`` as the original);
    ``dropout`` on the last layer's output. ``locked``: one mask per sequence shared by all time
    steps (variational; the default for 'rhn' and 'onlstm' as their code) or a fresh mask per
    element (the default for 'lstm', whose code uses ``nn.Dropout``).
    Init as the original: embedding and decoder values U(-0.1, 0.1), decoder bias 0.

    ``forward(tokens, state=None)``: tokens (T, B) (``batch_first``: (B, T)) -> logits
    (T, B, vocab) (or (B, T, vocab)) and the new state, a list with one entry per layer in that
    layer's own format (feed it back after :func:`detach_state`).
    """

    def __init__(self, vocab_size: int, embedding_size: int, hidden_size: int, num_layers: int = 2,
                 model: str = "lstm", *, density: float | None = None, epsilon: float | None = None,
                 tie_weights: bool = False, dropout: float = 0.0, dropouth: float = 0.0, dropouti: float = 0.0,
                 dropoute: float = 0.0, locked: bool | None = None, batch_first: bool = False, depth: int = 10,
                 couple: bool = True, chunk_size: int = 10, dropconnect: float = 0.0, device=None, dtype=None):
        super().__init__()
        if model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {model!r}")
        for name, v in (("vocab_size", vocab_size), ("embedding_size", embedding_size),
                        ("hidden_size", hidden_size), ("num_layers", num_layers)):
            check_positive_int(name, v)
        self.model, self.vocab_size, self.tie_weights = model, vocab_size, bool(tie_weights)
        self.batch_first = bool(batch_first)
        self.dropout, self.dropouth, self.dropouti, self.dropoute = (
            check_dropout(n, v) for n, v in (("dropout", dropout), ("dropouth", dropouth),
                                              ("dropouti", dropouti), ("dropoute", dropoute)))
        self.locked = (model != "lstm") if locked is None else bool(locked)
        sparse_kw = dict(density=density, epsilon=epsilon, device=device, dtype=dtype)
        self.embedding = SparseEmbedding(vocab_size, embedding_size, **sparse_kw)
        sizes = [embedding_size] + [hidden_size] * (num_layers - 1) + [embedding_size if tie_weights else hidden_size]
        layers = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            if model == "lstm":
                layers.append(SparseLSTM(n_in, n_out, **sparse_kw))
            elif model == "rhn":
                layers.append(SparseRHN(n_in, n_out, depth=depth, couple=couple, dropout_state=self.dropouth,
                                        **sparse_kw))
            else:
                layers.append(SparseONLSTM(n_in, n_out, chunk_size=chunk_size, dropconnect=dropconnect,
                                           **sparse_kw))
        self.layers = nn.ModuleList(layers)
        if tie_weights:
            self.decoder = None  # the embedding's weight
        else:
            d = resolve_density(vocab_size, sizes[-1], density, epsilon)
            w = SparseWeight.random(vocab_size, sizes[-1], d, dtype=dtype or torch.get_default_dtype())
            self.decoder = w.to(device) if device is not None else w
            init_values_uniform(self.decoder, 0.1)
        self.decoder_bias = nn.Parameter(torch.zeros(vocab_size, device=device, dtype=dtype))

    @property
    def decoder_weight(self) -> SparseWeight:
        """The (vocab x last hidden) decoder matrix (the embedding's when tied)."""
        return self.embedding.weight if self.decoder is None else self.decoder

    def _drop(self, x: torch.Tensor, p: float) -> torch.Tensor:
        if self.locked:
            return locked_dropout(x, p, self.training)
        return nn.functional.dropout(x, p, self.training)

    def forward(self, tokens: torch.Tensor, state=None):
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
            raise ValueError(f"tokens must be a 2-D (T, B) tensor of word ids ((B, T) with batch_first), got "
                             f"{tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__}")
        if state is not None and (not isinstance(state, (list, tuple)) or len(state) != len(self.layers)):
            raise ValueError(f"state must be a list of {len(self.layers)} layer states (the one forward returned)")
        x = tokens.t() if self.batch_first else tokens
        T, B = x.shape
        out = self.embedding(x, self.dropoute if self.training else 0.0)
        out = self._drop(out, self.dropouti)
        new_state = []
        between = self.dropout if self.model == "rhn" else self.dropouth
        for k, layer in enumerate(self.layers):
            out, s = layer(out, None if state is None else state[k])
            new_state.append(s)
            if k < len(self.layers) - 1:
                out = self._drop(out, between)
        out = self._drop(out, self.dropout)
        logits = matmul(self.decoder_weight, out.reshape(T * B, -1).t()).t() + self.decoder_bias
        logits = logits.view(T, B, self.vocab_size)
        return (logits.transpose(0, 1) if self.batch_first else logits), new_state

    def extra_repr(self) -> str:
        return (f"model={self.model!r}, vocab_size={self.vocab_size}, tie_weights={self.tie_weights}, "
                f"locked={self.locked}, dropout={self.dropout}, dropouth={self.dropouth}, dropouti={self.dropouti}, "
                f"dropoute={self.dropoute}")
