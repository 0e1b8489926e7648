"""SparseLSTM in use: inside a user model (loss falls), and at hidden 100,000 on the CPU within a
few GB (peak RSS measured in a subprocess)."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from torch import nn

import sparse_engine as se

ROOT = Path(__file__).resolve().parents[2]


class TinyLM(nn.Module):
    def __init__(self, vocab, hidden):
        super().__init__()
        self.emb = nn.Embedding(vocab, 16)
        self.rnn = se.nn.SparseLSTM(16, hidden, num_layers=2, batch_first=True, density=0.3)
        self.dec = nn.Linear(hidden, vocab)

    def forward(self, tokens):
        y, _ = self.rnn(self.emb(tokens))
        return self.dec(y)


def test_user_model_loss_falls():
    torch.manual_seed(0)
    vocab, T, B = 7, 10, 8
    g = torch.Generator().manual_seed(1)
    # the next token is a fixed function of the previous two: learnable, not trivial
    seq = torch.randint(vocab, (B, T + 1), generator=g)
    for t in range(2, T + 1):
        seq[:, t] = (seq[:, t - 1] + 2 * seq[:, t - 2]) % vocab
    x, target = seq[:, :-1], seq[:, 1:]
    model = TinyLM(vocab, 24)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x).reshape(-1, vocab), target.reshape(-1))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    # the optimizer updated the sparse values in place; the pattern is unchanged
    assert model.rnn.weight_hh_l0.values.grad is not None


_MEMORY_SCRIPT = textwrap.dedent("""
    import json, sys, torch
    from sparse_engine.runtime.timing import peak_rss_bytes
    sys.path.insert(0, sys.argv[1])
    import sparse_engine as se
    torch.manual_seed(0)
    torch.set_num_threads(2)
    H, per_row, T, B = 100_000, 20, 4, 2
    lstm = se.nn.SparseLSTM(16, H, density=per_row / H, sparse="recurrent")
    opt = torch.optim.Adam(lstm.parameters(), lr=1e-3)
    x = torch.randn(T, B, 16)
    losses = []
    for _ in range(3):
        opt.zero_grad()
        y, (h, c) = lstm(x)
        loss = y.square().mean() + c.square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    peak = peak_rss_bytes()
    print(json.dumps({"peak": peak, "nnz": lstm.weight_hh_l0.nnz, "losses": losses}))
""")


def test_hidden_100k_trains_within_a_few_gb():
    out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(ROOT)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    H = 100_000
    assert res["nnz"] == 4 * H * 20
    assert all(map(lambda v: v == v and v < float("inf"), res["losses"]))
    dense_bytes = 4 * H * H * 4  # one dense float32 W_hh: 160 GB
    assert res["peak"] < 3 * 2**30, f"peak RSS {res['peak'] / 2**30:.2f} GiB"
    assert res["peak"] < dense_bytes / 50
    print(f"peak RSS {res['peak'] / 2**30:.2f} GiB at hidden {H}, nnz(W_hh) {res['nnz']}")
