"""Whole pickled models under ``torch.load(weights_only=True)``: ``safe_globals_for`` lists what a real
model names (the user's classes, torch.nn's layers, ours), where ``safe_globals`` alone (ours) stops at
the first torch.nn layer."""
import io
import sys
import types

import pytest
import torch
from torch import nn

from sparse_engine.io import serialization
from sparse_engine.nn import SparseGRU, SparseLSTM


class WordModel(nn.Module):
    """torch.nn's layers around ours, as in PyTorch's word-language-model example."""

    def __init__(self, rnn=SparseLSTM):
        super().__init__()
        self.encoder, self.drop = nn.Embedding(20, 6), nn.Dropout(0.3)
        self.rnn = rnn(6, 8, density=0.5)
        self.decoder = nn.Linear(8, 20)

    def forward(self, ids):
        return self.decoder(self.rnn(self.drop(self.encoder(ids)))[0])


def _saved(model) -> io.BytesIO:
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    return buf


@pytest.mark.parametrize("rnn", [SparseLSTM, SparseGRU])
def test_a_model_of_torch_nn_layers_and_ours_loads_with_its_own_class(rnn):
    torch.manual_seed(0)
    model = WordModel(rnn).eval()
    ids = torch.randint(0, 20, (5, 3))
    with torch.serialization.safe_globals(serialization.safe_globals_for(WordModel)):
        loaded = torch.load(_saved(model), weights_only=True)
    assert type(loaded.rnn) is rnn and type(loaded.encoder) is nn.Embedding
    torch.testing.assert_close(loaded(ids), model(ids), rtol=0, atol=0)


def test_ours_alone_stop_at_the_first_torch_nn_layer():
    buf = _saved(WordModel())
    with torch.serialization.safe_globals([WordModel, *serialization.safe_globals()]):
        with pytest.raises(Exception, match="torch.nn.modules"):
            torch.load(buf, weights_only=True)


def test_a_python_module_gives_every_module_class_it_defines():
    user = types.ModuleType("user_models")
    sys.modules[user.__name__] = user
    try:
        exec("from torch import nn\nclass Head(nn.Module):\n    def __init__(self):\n"
             "        super().__init__()\n        self.out = nn.Linear(3, 2)\n"
             "class NotAModule:\n    pass\n", user.__dict__)
        found = serialization.safe_globals_for(user)
        assert user.Head in found and user.NotAModule not in found
        assert nn.Linear in found and set(serialization.safe_globals()) <= set(found)
        with torch.serialization.safe_globals(found):
            loaded = torch.load(_saved(user.Head()), weights_only=True)
        assert type(loaded) is user.Head
    finally:
        del sys.modules[user.__name__]


def test_anything_else_is_one_type_error():
    with pytest.raises(TypeError, match="nn.Module classes or Python modules"):
        serialization.safe_globals_for("WordModel")
