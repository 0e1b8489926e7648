"""Small recurrent layers (issue #18): our LSTM/GRU on each compute path against dense torch.nn.

The word-language-model setting: hidden 200 (= input 200), density 0.33, T=35; a training step
(forward + backward) at batch 20 and inference (no_grad, eval) at batch 10. Ours on the sparse
path, the dense-compute path and ``compute='auto'``, against ``nn.LSTM``/``nn.GRU`` with the same
(zero-filled) weights. ``--sweep`` adds the sparse/dense crossover over hidden sizes and densities
that ``compute='auto'`` follows (docs/compute_paths.md). ``--lm`` adds the whole training batch
and evaluation batch of PyTorch's word_language_model example (embedding, 2-layer LSTM 200,
dropout 0.2, decoder over a 10,000-word vocabulary as PTB's, bptt 35, batch 20, SGD with
clipping; evaluation at batch 10) with nn.LSTM and with SparseLSTM at density 0.33. The results file is rewritten after every
row, with the load average before and after each row (numbers from a busy machine are not results).

    python benchmarks/bench_small_lstm.py [--quick] [--sweep] [--lm] [--out small_lstm_cpu.md]
"""
from __future__ import annotations

import argparse
import os

import torch
from torch import nn

import sparse_engine as se
from common import markdown_table, ms, ratio, timeit, write_result

SPARSE = {"LSTM": se.nn.SparseLSTM, "GRU": se.nn.SparseGRU}
DENSE = {"LSTM": nn.LSTM, "GRU": nn.GRU}
PATHS = ("sparse", "dense", "auto")


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def train_step(m, x):
    def run():
        m.zero_grad(set_to_none=True)
        m(x)[0].sum().backward()
    return run


def infer(m, x):
    def run():
        with torch.no_grad():
            m(x)
    return run


def modules(mode, hidden, density, seed=0):
    torch.manual_seed(seed)
    ours = SPARSE[mode](hidden, hidden, density=density)
    return ours, ours.to_dense()


def main_table(args, rows, sections):
    header = ["cell", "case", "torch.nn (ms)"] + [f"{p} (ms)" for p in PATHS] + \
             [f"{p} vs torch.nn" for p in PATHS] + ["load before", "load after"]
    for mode in args.modes:
        ours, dense = modules(mode, args.hidden, args.density)
        for case, batch, make in (("fwd+bwd", args.batch, train_step), ("inference", args.infer_batch, infer)):
            before = load()
            x = torch.randn(args.steps, batch, args.hidden)
            ours.train(case == "fwd+bwd"), dense.train(case == "fwd+bwd")
            base = timeit(make(dense, x), repeat=args.repeat, min_time=args.min_time)
            times = []
            for path in PATHS:
                ours.compute = path
                times.append(timeit(make(ours, x), repeat=args.repeat, min_time=args.min_time))
            rows.append([mode, f"{case}, B={batch}", ms(base), *map(ms, times), *(ratio(base, t) for t in times),
                         before, load()])
            write(args, markdown_table(header, rows), sections)


def sweep(args, sections):
    header = ["cell", "hidden", "density", "sparse (ms)", "dense (ms)", "dense vs sparse", "auto picks",
              "load after"]
    rows = []
    for hidden in args.sweep_hidden:
        for density in args.sweep_density:
            ours, _ = modules("LSTM", hidden, density)
            x = torch.randn(args.steps, args.batch, hidden)
            t = {}
            for path in ("sparse", "dense"):
                ours.compute = path
                t[path] = timeit(train_step(ours, x), repeat=args.repeat, min_time=args.min_time)
            ours.compute = "auto"
            picks = "dense" if ours._dense_now(x) else "sparse"
            rows.append(["LSTM", hidden, density, ms(t["sparse"]), ms(t["dense"]), ratio(t["sparse"], t["dense"]),
                         picks, load()])
            sections["sweep"] = ("## Crossover (LSTM fwd+bwd, T={}, B={})\n\n".format(args.steps, args.batch)
                                 + markdown_table(header, rows))
            write(args, None, sections)


class WordLM(nn.Module):
    """The word_language_model example's RNNModel (LSTM, untied): embedding, dropout, the
    recurrent stack, dropout, decoder."""

    def __init__(self, rnn: nn.Module, vocab: int, size: int, dropout: float):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(vocab, size)
        self.rnn = rnn
        self.decoder = nn.Linear(size, vocab)

    def forward(self, tokens, hidden):
        out, hidden = self.rnn(self.drop(self.encoder(tokens)), hidden)
        return self.decoder(self.drop(out)), hidden


def lm_epoch(args, sections):
    """Seconds per training batch and per evaluation batch of the example, ours against torch.nn,
    measured alternately on the same random token ids."""
    V, H, L = args.lm_vocab, args.hidden, 2
    torch.manual_seed(0)
    sparse_rnn = se.nn.SparseLSTM(H, H, L, dropout=0.2, density=args.density)
    models = {"torch.nn": WordLM(sparse_rnn.to_dense(), V, H, 0.2), "ours": WordLM(sparse_rnn, V, H, 0.2)}
    models["ours"].encoder.load_state_dict(models["torch.nn"].encoder.state_dict())
    models["ours"].decoder.load_state_dict(models["torch.nn"].decoder.state_dict())
    tokens = torch.randint(V, (args.steps + 1, args.batch))
    eval_tokens = torch.randint(V, (args.steps + 1, args.infer_batch))

    def train_batch(m):
        opt = torch.optim.SGD(m.parameters(), lr=20.0)

        def run():
            m.train()
            hidden = None
            m.zero_grad(set_to_none=True)
            out, hidden = m(tokens[:-1], hidden)
            nn.functional.cross_entropy(out.view(-1, V), tokens[1:].reshape(-1)).backward()
            nn.utils.clip_grad_norm_(m.parameters(), 0.25)
            opt.step()
        return run

    def eval_batch(m):
        def run():
            m.eval()
            with torch.no_grad():
                out, _ = m(eval_tokens[:-1], None)
                nn.functional.cross_entropy(out.view(-1, V), eval_tokens[1:].reshape(-1))
        return run

    header = ["case", "torch.nn (ms)", "ours (ms)", "ours vs torch.nn", "load after"]
    rows = []
    for case, make in (("training batch, B=%d" % args.batch, train_batch), ("evaluation batch, B=%d" % args.infer_batch,
                                                                           eval_batch)):
        runs = {k: make(m) for k, m in models.items()}
        t = {k: [] for k in runs}
        for _ in range(args.lm_rounds):  # alternate, so a change of load hits both
            for k, run in runs.items():
                t[k].append(timeit(run, repeat=3, min_time=args.min_time / 2))
        base, ours = min(t["torch.nn"]), min(t["ours"])
        rows.append([case, ms(base), ms(ours), ratio(base, ours), load()])
        sections["lm"] = (f"## The word_language_model example's batches (vocabulary {V:,}, 2-layer LSTM {H}, "
                          f"density {args.density}, bptt {args.steps})\n\nBest of {args.lm_rounds} alternating "
                          "rounds; 'ours vs torch.nn' is torch.nn's time / ours (above 1: ours faster).\n\n"
                          + markdown_table(header, rows))
        write(args, None, sections)


def write(args, table, sections):
    if table is not None:
        sections["main"] = (f"## Hidden {args.hidden}, input {args.hidden}, density {args.density}, T={args.steps}\n\n"
                            "Times are medians; 'X vs torch.nn' is torch.nn's time / ours (above 1: ours faster). "
                            "Load: 1/5/15-minute load averages.\n\n" + table)
    body = "\n\n".join(sections[k] for k in ("main", "lm", "sweep") if k in sections)
    path = write_result(args.out, "Small recurrent layers: compute paths against torch.nn (CPU)", body)
    print(f"wrote {path}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modes", nargs="+", default=["LSTM", "GRU"], choices=sorted(SPARSE))
    p.add_argument("--hidden", type=int, default=200)
    p.add_argument("--density", type=float, default=0.33)
    p.add_argument("--steps", type=int, default=35)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--infer-batch", type=int, default=10)
    p.add_argument("--sweep", action="store_true", help="also measure the sparse/dense crossover")
    p.add_argument("--sweep-hidden", type=int, nargs="+", default=[200, 500, 1000, 1500, 2500])
    p.add_argument("--sweep-density", type=float, nargs="+", default=[0.01, 0.03, 0.05, 0.1, 0.33])
    p.add_argument("--lm", action="store_true", help="also time the word_language_model example's batches")
    p.add_argument("--lm-vocab", type=int, default=10_000)
    p.add_argument("--lm-rounds", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="few samples: checks the script, not for results")
    p.add_argument("--out", default="small_lstm_cpu.md")
    args = p.parse_args()
    args.repeat, args.min_time = (3, 0.0) if args.quick else (7, 0.5)
    sections = {}
    main_table(args, [], sections)
    if args.lm:
        lm_epoch(args, sections)
    if args.sweep:
        sweep(args, sections)


if __name__ == "__main__":
    main()
