"""Character-level language model on SMS messages: embedding + SparseLSTM + dense decoder.

    python examples/lstm_language_model.py [--data data/sms_spam/SMSSpamCollection]
        [--hidden 512] [--density 0.05] [--steps 200]

Prints the training loss (nats/char), the sparse weights' nnz against the dense count, and the
peak memory of the process. The data file is the UCI SMS Spam Collection (label<TAB>text a line):
``python -m sparse_engine.data.fetch sms_spam`` puts it at the default path, checked against its SHA-256.
"""
from __future__ import annotations

import sparse_engine  # noqa: F401  (before torch: OpenMP's idle threads then sleep, not spin)

import argparse
import resource
import sys
import time
from pathlib import Path

import torch
from torch import nn

import sparse_engine as se
from sparse_engine import SparseWeight
from sparse_engine.cli import checked, run_handled
from sparse_engine.runs import validators

DEFAULT = Path("data") / "sms_spam" / "SMSSpamCollection"  # where sparse_engine.data.download puts it


class CharLM(nn.Module):
    def __init__(self, vocab: int, hidden: int, density: float, layers: int):
        super().__init__()
        self.emb = nn.Embedding(vocab, 64)
        self.rnn = se.nn.SparseLSTM(64, hidden, num_layers=layers, batch_first=True, density=density)
        self.dec = nn.Linear(hidden, vocab)

    def forward(self, x, state=None):
        y, state = self.rnn(self.emb(x), state)
        return self.dec(y), state


def load_text(path: Path) -> str:
    if not path.exists():
        raise SystemExit(f"data file not found: {path} (download it with `python -m sparse_engine.data.fetch sms_spam`, or pass --data)")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(line.split("\t", 1)[-1] for line in lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT)
    p.add_argument("--hidden", type=checked(validators.integer(1), int), default=512)
    p.add_argument("--layers", type=checked(validators.integer(1), int), default=1)
    p.add_argument("--density", type=checked(validators.fraction), default=0.05)
    p.add_argument("--steps", type=checked(validators.integer(1), int), default=200)
    p.add_argument("--seq", type=checked(validators.integer(2), int), default=64)
    p.add_argument("--batch", type=checked(validators.integer(1), int), default=32)
    p.add_argument("--lr", type=checked(validators.non_negative), default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)

    text = load_text(args.data)
    data = torch.tensor(bytearray(text.encode("utf-8", errors="replace")), dtype=torch.long)
    vocab = 256  # bytes: no vocabulary bookkeeping
    split = int(0.9 * len(data))
    train, valid = data[:split], data[split:]
    model = CharLM(vocab, args.hidden, args.density, args.layers)
    sparse_nnz = sum(m.nnz for m in model.modules() if isinstance(m, SparseWeight))
    sparse_dense = sum(m.shape[0] * m.shape[1] for m in model.modules() if isinstance(m, SparseWeight))
    print(f"{len(data):,} bytes of SMS text; SparseLSTM hidden {args.hidden}, density {args.density}: "
          f"nnz {sparse_nnz:,} of {sparse_dense:,} ({sparse_nnz / sparse_dense:.2%})")
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()

    def batch(src):
        starts = torch.randint(len(src) - args.seq - 1, (args.batch,))
        idx = starts[:, None] + torch.arange(args.seq + 1)
        chunk = src[idx]
        return chunk[:, :-1], chunk[:, 1:]

    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        x, y = batch(train)
        opt.zero_grad()
        logits, _ = model(x)
        loss = loss_fn(logits.reshape(-1, vocab), y.reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 25 == 0 or step == 1:
            with torch.no_grad():
                vx, vy = batch(valid)
                vloss = loss_fn(model(vx)[0].reshape(-1, vocab), vy.reshape(-1)).item()
            print(f"step {step:4d}  train loss {loss.item():.3f}  valid loss {vloss:.3f} nats/char  "
                  f"{(time.perf_counter() - t0) / step * 1e3:.0f} ms/step")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS {peak:.2f} GiB")


if __name__ == "__main__":
    sys.exit(run_handled(main, "lstm_language_model.py"))
