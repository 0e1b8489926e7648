"""Small recurrent layers (issue #18): our LSTM/GRU on each compute path against dense torch.nn.

The word-language-model setting: hidden 200 (= input 200), density 0.33, T=35; a training step
(forward + backward) at batch 20 and inference (no_grad, eval) at batch 10. Ours on the sparse
path, the dense-compute path and ``compute='auto'`` (for the GRU also the dense path through
torch's own GRU, ``fused=False``), against ``nn.LSTM``/``nn.GRU`` with the same (zero-filled)
weights.

``--lm`` adds the training batch and the evaluation batch of PyTorch's word_language_model example
(embedding, 2-layer LSTM 200, dropout 0.2, decoder over a 10,000-word vocabulary as PTB's, bptt 35,
batch 20, SGD through ``p.data`` with clipping as the example does; evaluation at batch 10) with
nn.LSTM and with SparseLSTM at density 0.33; ``--epoch`` a whole epoch of that example over a fixed
corpus of random token ids (``--epoch-batches`` training batches, then the validation pass over
a quarter as many tokens at batch 10), each model in turn. ``--sweep`` adds the sparse/dense
crossover over hidden sizes and densities that ``compute='auto'`` follows (docs/compute_paths.md), for
each cell of ``--modes``, with the sparse kernels per step and as one op per sequence (``persistent``),
at ``--threads`` (``--out small_rnn_sweep_cpu_2threads.md --threads 2``: the committed tables).
``--dense-threads`` times the dense path without a backward on one thread against ``--threads``, for each
cell of --modes over --sweep-hidden (small_rnn_dense_threads_cpu.md: what the dense path's one-thread bounds
are fitted to); with ``--dense-threads-train`` training steps, forward and backward
(small_rnn_dense_threads_train_cpu.md). ``--torch-one-thread`` times torch's own nn.LSTM/nn.GRU in training steps
under ``runtime.one_thread.on_one_thread`` against plain (torch_one_thread_cpu.md).

The training comparisons of the example put each model's parameters back to their first values
(untimed) before every sample and every epoch (see Restore). Every comparison alternates: each
round takes one sample of every variant (a sample repeats a
call for ``--min-time`` / rounds seconds), in an order rotated from round to round, so a change of
load hits all of them; the tables give the median over the rounds of each variant's time and of
its per-round ratio to torch.nn (torch.nn's time / ours, above 1: ours faster). The results file
is rewritten after every row, with the 1-minute load average before and after each row (numbers
from a busy machine are not results: run where ``uptime`` says under 2). ``--clock cpu`` times the
calling thread's CPU time instead of the wall clock (``time.thread_time``; with one thread every
kernel runs on it): time spent descheduled by other jobs is not counted, which makes comparisons
on a shared machine steadier, though the caches they share still slow both sides.

    python benchmarks/bench_small_lstm.py [--quick] [--lm] [--epoch] [--sweep] [--threads 1] [--clock wall|cpu]
                                          [--out small_lstm_cpu.md]

Without --out the results file is a fresh one, benchmarks/results/local/small_lstm_cpu-<UTC
time>.md (named at the start and the end); a committed table is rewritten only with --out NAME
(small_lstm_cpu.md; small_lstm_sweep_cpu.md, a run with --sweep). The console shows each table's
header, then a line as each row's comparison starts and one (its row) as it ends.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time


import sparse_engine as se
from common import announce, announce_columns, cell, finish, markdown_table, ms, out_help, results_path, write_result
from sparse_engine.recurrent import compute_paths
from sparse_engine.recurrent.compute_paths import use_persistent
from sparse_engine.runtime.timing import times_of
import torch  # noqa: E402
from torch import nn  # noqa: E402

SPARSE = {"LSTM": se.nn.SparseLSTM, "GRU": se.nn.SparseGRU}
DENSE = {"LSTM": nn.LSTM, "GRU": nn.GRU}
PATHS = ("sparse", "dense", "auto")


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


#: the clock of every measurement (``--clock``): the wall clock, or this thread's CPU time
CLOCK = {"wall": time.perf_counter, "cpu": time.thread_time}
clock = CLOCK["wall"]


def sample(fn, seconds: float) -> float:
    """Seconds per call of ``fn`` on ``clock``, calling it until ``seconds`` have passed (at least once)."""
    return times_of(fn, 1, min_time=seconds, clock=clock)[0]


def alternate(runs: dict, rounds: int, seconds: float, before=None) -> dict:
    """{name: [seconds per call, one per round]}: every run once per round (after one warm-up
    call each), the order rotated by one from round to round; ``before(name)``, if given, is
    called untimed before each sample."""
    names = list(runs)
    for fn in runs.values():
        fn()
    times = {k: [] for k in names}
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            if before is not None:
                before(k)
            times[k].append(sample(runs[k], seconds))
    return times


class Restore:
    """Puts each model's parameters back to what they were when this was made: the training
    comparisons start every sample (every epoch) from the same weights, so that the two models'
    numbers (which drift apart under SGD at the example's learning rate of 20: the dense model's
    zeros get gradients) do not weigh in on their times."""

    def __init__(self, models: dict):
        self.models = models
        self.saved = {k: [p.detach().clone() for p in m.parameters()] for k, m in models.items()}

    def __call__(self, name: str) -> None:
        with torch.no_grad():
            for p, q in zip(self.models[name].parameters(), self.saved[name]):
                p.copy_(q)


def paired_ratio(times: dict, base: str, other: str) -> str:
    """The median over rounds of base's time / other's time in the same round."""
    return f"{statistics.median(b / o for b, o in zip(times[base], times[other])):.3f}x"


def median_ms(times: list) -> str:
    return ms(statistics.median(times))


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


def main_table(args, sections):
    header = (["cell", "case", "torch.nn (ms)"] + [f"{p} (ms)" for p in PATHS] + ["dense, torch's GRU (ms)"]
              + [f"{p} vs torch.nn" for p in PATHS] + ["dense, torch's GRU vs torch.nn", "load before", "load after"])
    rows = []
    section(f"## Hidden {args.hidden}, input {args.hidden}, density {args.density}, T={args.steps}", header)
    for mode in args.modes:
        ours, dense = modules(mode, args.hidden, args.density)
        # the same module object in every variant but torch.nn's: its own copy per path, so each
        # keeps its dense buffers as it would in use
        variants = {p: ours if p == "sparse" else SPARSE[mode](args.hidden, args.hidden, density=args.density)
                    for p in PATHS}
        for p, m in variants.items():
            if m is not ours:
                m.load_state_dict(ours.state_dict())
            m.compute = p
        if mode == "GRU":
            variants["torch-gru"] = SPARSE[mode](args.hidden, args.hidden, density=args.density, fused=False,
                                                 compute="dense")
            variants["torch-gru"].load_state_dict(ours.state_dict())
        for case, batch, make in (("fwd+bwd", args.batch, train_step), ("inference", args.infer_batch, infer)):
            with cell(f"{mode} {case}, B={batch}") as c:
                before = load()
                x = torch.randn(args.steps, batch, args.hidden)
                for m in (dense, *variants.values()):
                    m.train(case == "fwd+bwd")
                runs = {"torch.nn": make(dense, x), **{p: make(m, x) for p, m in variants.items()}}
                t = alternate(runs, args.rounds, args.min_time / args.rounds)
                gru = "torch-gru" in t
                c.result = [mode, f"{case}, B={batch}", median_ms(t["torch.nn"]), *(median_ms(t[p]) for p in PATHS),
                            median_ms(t["torch-gru"]) if gru else "-",
                            *(paired_ratio(t, "torch.nn", p) for p in PATHS),
                            paired_ratio(t, "torch.nn", "torch-gru") if gru else "-", before, load()]
            rows.append(c.result)
            sections["main"] = (
                f"## Hidden {args.hidden}, input {args.hidden}, density {args.density}, T={args.steps}\n\n"
                f"Medians of {args.rounds} alternating rounds; 'X vs torch.nn' is the median over the rounds of "
                "torch.nn's time / ours (above 1: ours faster). Load: 1/5/15-minute load averages.\n\n"
                + markdown_table(header, rows))
            write(args, sections)


def sweep(args, sections):
    """The dense path against the sparse kernels (per step, and the whole sequence in one op:
    compute='persistent') for each cell of --modes over --sweep-hidden x --sweep-density, and what
    compute='auto' picks at these threads: training steps, or with --sweep-inference calls under
    ``torch.no_grad`` (where the dense path rewrites its matrices only when the values changed)."""
    inference = args.sweep_inference
    make = infer if inference else train_step
    header = ["cell", "hidden", "density", "sparse (ms)", "persistent (ms)", "dense (ms)", "dense vs sparse",
              "dense vs persistent", "auto picks", "auto vs best", "load after"]
    rows = []
    title = (f"## Crossover ({'inference' if inference else 'fwd+bwd'}, T={args.steps}, B={args.batch}, "
             f"{torch.get_num_threads()} threads)")
    section(title, header)
    for mode in args.modes:
        for hidden in args.sweep_hidden:
            for density in args.sweep_density:
                with cell(f"{mode} hidden {hidden}, density {density}") as c:
                    ours, _ = modules(mode, hidden, density)
                    dense = SPARSE[mode](hidden, hidden, density=density, compute="dense")
                    dense.load_state_dict(ours.state_dict())
                    whole = SPARSE[mode](hidden, hidden, density=density, compute="persistent")
                    whole.load_state_dict(ours.state_dict())
                    ours.compute = "sparse"
                    x = torch.randn(args.steps, args.batch, hidden)
                    for m in (ours, whole, dense):
                        m.train(not inference)
                    runs = {"sparse": make(ours, x), "persistent": make(whole, x), "dense": make(dense, x)}
                    # a call of the path before its sample: the first call after another path's paid
                    # page faults (malloc had given their memory back), up to 1.6x at hidden 1,500
                    t = alternate(runs, args.rounds, args.min_time / args.rounds, before=lambda k: runs[k]())
                    ours.compute = "auto"
                    with torch.set_grad_enabled(not inference):
                        picks = ("dense" if ours._dense_now(x, batch=args.batch, steps=args.steps) else
                                 "persistent" if use_persistent("auto", ours.weight_hh_l0, args.steps, args.batch,
                                                                backward=not inference)
                                 else "sparse")
                    mid = {k: statistics.median(v) for k, v in t.items()}
                    c.result = [mode, hidden, density, *(median_ms(t[k]) for k in ("sparse", "persistent", "dense")),
                                paired_ratio(t, "sparse", "dense"), paired_ratio(t, "persistent", "dense"), picks,
                                f"{min(mid.values()) / mid[picks]:.3f}x", load()]
                rows.append(c.result)
                sections["sweep"] = (f"{title}\n\nMedians of {args.rounds} alternating rounds, each sample after an "
                                     "untimed call of its path; 'dense vs X': the "
                                     "median over the rounds of X's time / the dense path's (above 1: dense "
                                     "faster); 'auto vs best': the fastest path's median over the one auto "
                                     "picks (1: auto picked the fastest).\n\n" + markdown_table(header, rows))
                write(args, sections)


def dense_threads(args, sections):
    """The dense path without a backward (with ``--dense-threads-train`` a training step's forward and
    backward) on one thread against torch's threads (``--threads``), each cell of --modes over --sweep-hidden
    at --batch and --steps: what the dense path's one-thread bounds
    (:data:`~sparse_engine.recurrent.compute_paths.DENSE_ONE_THREAD_MAX_ENTRIES`, ``_MACS``) are fitted to (the
    library's bounds are set for each variant: always one thread, or never)."""
    header = ["cell", "hidden", "B", "T", "one thread (ms)", f"{torch.get_num_threads()} threads (ms)",
              "one thread vs threads", "the rule picks", "load after"]
    rows = []
    train = args.dense_threads_train
    what = "in a training step (forward and backward)" if train else "without a backward"
    title = (f"## The dense path {what}: one thread or {torch.get_num_threads()} "
             f"(T={args.steps}, B={args.batch})")
    section(title, header)
    names = ("DENSE_ONE_THREAD_MAX_ENTRIES", "DENSE_ONE_THREAD_MAX_MACS_BACKWARD" if train else
             "DENSE_ONE_THREAD_MAX_MACS")
    default = tuple(getattr(compute_paths, n) for n in names)

    def bound(value, fn):
        def run():
            for n in names:
                setattr(compute_paths, n, value)
            try:
                fn()
            finally:
                for n, d in zip(names, default):
                    setattr(compute_paths, n, d)
        return run

    for mode in args.modes:
        for hidden in args.sweep_hidden:
            with cell(f"{mode} hidden {hidden}") as c:
                m, _ = modules(mode, hidden, 0.1)
                m.compute = "dense"
                m.train(train)
                x = torch.randn(args.steps, args.batch, hidden)
                call = train_step if train else infer
                runs = {"one": bound(math.inf, call(m, x)), "threads": bound(-1, call(m, x))}
                t = alternate(runs, args.rounds, args.min_time / args.rounds)
                picks = ("one" if torch.get_num_threads() > 1 and compute_paths.dense_on_one_thread_by_sizes(
                    m.weight_hh_l0.shape[0] * hidden, args.batch, train) else "threads")
                c.result = [mode, hidden, args.batch, args.steps, median_ms(t["one"]), median_ms(t["threads"]),
                            paired_ratio(t, "threads", "one"), picks, load()]
            rows.append(c.result)
            sections["dense_threads"] = (
                f"{title}\n\nMedians of {args.rounds} alternating rounds; 'one thread vs threads': the median over "
                "the rounds of the threads' time / one thread's (above 1: one thread faster); 'the rule picks': "
                f"one thread where W_hh holds at most {names[0]} = {default[0]:,} entries and "
                f"one step's product at most {names[1]} = {default[1]:,} multiply-adds.\n\n"
                + markdown_table(header, rows))
            write(args, sections)


def torch_one_thread(args, sections):
    """torch's own ``nn.LSTM``/``nn.GRU`` (one layer, input = hidden) in a training step on ``--threads``,
    plain against under ``sparse_engine.runtime.one_thread.on_one_thread`` (its forward and the backward of
    what it records on one thread), each cell of --modes over --sweep-hidden at --batch and --steps: what a
    user's small torch recurrences gain after ``import sparse_engine`` made torch's threads sleep."""
    from sparse_engine.runtime.one_thread import on_one_thread

    header = ["cell", "hidden", "B", "T", "on_one_thread (ms)", f"plain, {torch.get_num_threads()} threads (ms)",
              "on_one_thread vs plain", "load after"]
    rows = []
    title = (f"## torch's nn.LSTM / nn.GRU in a training step: on_one_thread or plain on "
             f"{torch.get_num_threads()} threads (T={args.steps}, B={args.batch})")
    section(title, header)
    for mode in args.modes:
        for hidden in args.sweep_hidden:
            with cell(f"{mode} hidden {hidden}") as c:
                torch.manual_seed(0)
                plain, wrapped = DENSE[mode](hidden, hidden), DENSE[mode](hidden, hidden)
                on_one_thread(wrapped)
                x = torch.randn(args.steps, args.batch, hidden)
                t = alternate({"one": train_step(wrapped, x), "plain": train_step(plain, x)}, args.rounds,
                              args.min_time / args.rounds)
                c.result = [mode, hidden, args.batch, args.steps, median_ms(t["one"]), median_ms(t["plain"]),
                            paired_ratio(t, "plain", "one"), load()]
            rows.append(c.result)
            sections["torch_one_thread"] = (
                f"{title}\n\nMedians of {args.rounds} alternating rounds; 'on_one_thread vs plain': the median over "
                "the rounds of the plain module's time / the wrapped one's (above 1: on_one_thread faster).\n\n"
                + markdown_table(header, rows))
            write(args, sections)


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


def lm_models(args):
    """{'torch.nn': the example's model with nn.LSTM, 'ours': with SparseLSTM}: the same weights."""
    V, H = args.lm_vocab, args.hidden
    torch.manual_seed(0)
    sparse_rnn = se.nn.SparseLSTM(H, H, 2, dropout=0.2, density=args.density)
    models = {"torch.nn": WordLM(sparse_rnn.to_dense(), V, H, 0.2), "ours": WordLM(sparse_rnn, V, H, 0.2)}
    models["ours"].encoder.load_state_dict(models["torch.nn"].encoder.state_dict())
    models["ours"].decoder.load_state_dict(models["torch.nn"].decoder.state_dict())
    return models


def detach(h):
    return h.detach() if isinstance(h, torch.Tensor) else tuple(detach(t) for t in h)


def train_batch(m, V, lr=20.0, clip=0.25):
    """The example's training step on (inputs, targets) from hidden: SGD through p.data."""
    def step(inputs, targets, hidden):
        m.zero_grad(set_to_none=True)
        out, hidden = m(inputs, hidden)
        nn.functional.cross_entropy(out.view(-1, V), targets).backward()
        nn.utils.clip_grad_norm_(m.parameters(), clip)
        for p in m.parameters():
            p.data.add_(p.grad, alpha=-lr)
        return detach(hidden)
    return step


def eval_batch(m, V):
    def step(inputs, targets, hidden):
        out, hidden = m(inputs, hidden)
        return nn.functional.cross_entropy(out.view(-1, V), targets).item(), hidden
    return step


def lm_batches(args, sections):
    """Seconds per training batch and per evaluation batch of the example, ours against torch.nn,
    alternating, on the same random token ids."""
    V = args.lm_vocab
    models = lm_models(args)
    tokens = torch.randint(V, (args.steps + 1, args.batch), generator=torch.Generator().manual_seed(1))
    eval_tokens = torch.randint(V, (args.steps + 1, args.infer_batch), generator=torch.Generator().manual_seed(2))

    def train_run(m):
        step = train_batch(m, V)

        def run():
            m.train()
            step(tokens[:-1], tokens[1:].reshape(-1), None)
        return run

    def eval_run(m):
        step = eval_batch(m, V)

        def run():
            m.eval()
            with torch.no_grad():
                step(eval_tokens[:-1], eval_tokens[1:].reshape(-1), None)
        return run

    header = ["case", "torch.nn (ms)", "ours (ms)", "ours vs torch.nn", "load before", "load after"]
    rows = []
    section(f"## The word_language_model example's batches (vocabulary {V:,})", header)
    for case, make in ((f"training batch, B={args.batch}", train_run), (f"evaluation batch, B={args.infer_batch}",
                                                                         eval_run)):
        with cell(f"word_language_model {case}") as c:
            before = load()
            t = alternate({k: make(m) for k, m in models.items()}, args.rounds, args.min_time / args.rounds,
                          before=Restore(models))
            c.result = [case, median_ms(t["torch.nn"]), median_ms(t["ours"]), paired_ratio(t, "torch.nn", "ours"),
                        before, load()]
        rows.append(c.result)
        sections["lm"] = (f"## The word_language_model example's batches (vocabulary {V:,}, 2-layer LSTM "
                          f"{args.hidden}, density {args.density}, bptt {args.steps})\n\nMedians of {args.rounds} "
                          "alternating rounds; 'ours vs torch.nn' is the median over the rounds of torch.nn's time "
                          "/ ours (above 1: ours faster).\n\n" + markdown_table(header, rows))
        write(args, sections)


def columns(data: torch.Tensor, bsz: int) -> torch.Tensor:
    """The example's batchify: (steps, bsz), the stream cut into bsz contiguous columns."""
    steps = data.numel() // bsz
    return data[:steps * bsz].view(bsz, steps).t().contiguous()


def lm_epoch(args, sections):
    """Seconds per epoch of the example (training over the corpus with truncated BPTT, then the
    validation pass), ours against torch.nn, alternating epoch by epoch."""
    V, bptt = args.lm_vocab, args.steps
    models = lm_models(args)
    g = torch.Generator().manual_seed(3)
    train_data = columns(torch.randint(V, (args.epoch_batches * bptt * args.batch + 1,), generator=g), args.batch)
    val_data = columns(torch.randint(V, (args.epoch_batches * bptt * args.batch // 4 + 1,), generator=g),
                       args.infer_batch)

    def epoch(m):
        train, evaluate = train_batch(m, V), eval_batch(m, V)

        def run():
            m.train()
            hidden = None
            for i in range(0, train_data.shape[0] - 1, bptt):
                n = min(bptt, train_data.shape[0] - 1 - i)
                hidden = train(train_data[i:i + n], train_data[i + 1:i + 1 + n].reshape(-1), hidden)
            m.eval()
            hidden, total = None, 0.0
            with torch.no_grad():
                for i in range(0, val_data.shape[0] - 1, bptt):
                    n = min(bptt, val_data.shape[0] - 1 - i)
                    loss, hidden = evaluate(val_data[i:i + n], val_data[i + 1:i + 1 + n].reshape(-1), hidden)
                    total += n * loss
        return run

    header = ["epoch", "torch.nn (s)", "ours (s)", "ours vs torch.nn", "load before", "load after"]
    section(f"## A whole epoch of the word_language_model example (vocabulary {V:,})", header)
    before = load()
    runs = {k: epoch(m) for k, m in models.items()}
    restore = Restore(models)
    t = {k: [] for k in runs}
    for r in range(args.epoch_rounds):  # whole epochs, alternating, the first model swapped each round
        for k in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            with cell(f"word_language_model epoch, {k}, round {r + 1} of {args.epoch_rounds}") as c:
                restore(k)  # every epoch from the same weights
                t[k] += times_of(runs[k], 1, clock=clock)
                c.result = f"{t[k][-1]:.2f} s"
    val_batches = (val_data.shape[0] - 1 + bptt - 1) // bptt
    row = [f"{args.epoch_batches} training batches (B={args.batch}) + {val_batches} validation batches "
           f"(B={args.infer_batch})", f"{statistics.median(t['torch.nn']):.2f}", f"{statistics.median(t['ours']):.2f}",
           paired_ratio(t, "torch.nn", "ours"), before, load()]
    print(" | ".join(row), flush=True)
    sections["epoch"] = (f"## A whole epoch of the word_language_model example (vocabulary {V:,}, 2-layer LSTM "
                         f"{args.hidden}, density {args.density}, bptt {bptt}, random token ids)\n\nMedians of "
                         f"{args.epoch_rounds} epochs each, alternating (the first model swapped each round); "
                         "'ours vs torch.nn' is the median over the rounds of torch.nn's time / ours.\n\n"
                         + markdown_table(header, [row]))
    write(args, sections)


TITLE = "Small recurrent layers: compute paths against torch.nn (CPU)"


def section(heading: str, columns: list) -> None:
    """A table's heading and columns on the console, before its first measurement."""
    print(heading, flush=True)
    announce_columns(columns)


def write(args, sections):
    clocks = {"wall": "Times are wall-clock.", "cpu": "Times are the benchmark thread's CPU time (--clock cpu), not "
              "wall-clock."}
    order = ("main", "lm", "epoch", "sweep", "dense_threads", "torch_one_thread")
    body = clocks[args.clock] + "\n\n" + "\n\n".join(sections[k] for k in order if k in sections)
    write_result(args.path, TITLE, body)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modes", nargs="+", default=["LSTM", "GRU"], choices=sorted(SPARSE))
    p.add_argument("--hidden", type=int, default=200)
    p.add_argument("--density", type=float, default=0.33)
    p.add_argument("--steps", type=int, default=35)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--infer-batch", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--clock", choices=sorted(CLOCK), default="wall",
                   help="wall clock, or this thread's CPU time (steadier on a shared machine; one thread)")
    p.add_argument("--rounds", type=int, default=15, help="alternating rounds per comparison")
    p.add_argument("--min-time", type=float, default=6.0, help="seconds per variant and comparison, all rounds")
    p.add_argument("--no-main", action="store_true", help="skip the module table")
    p.add_argument("--sweep", action="store_true", help="also measure the sparse/dense crossover")
    p.add_argument("--sweep-hidden", type=int, nargs="+", default=[200, 500, 1000, 1500, 2500])
    p.add_argument("--sweep-density", type=float, nargs="+", default=[0.01, 0.03, 0.05, 0.1, 0.33])
    p.add_argument("--sweep-inference", action="store_true",
                   help="the sweep times calls under torch.no_grad instead of training steps")
    p.add_argument("--dense-threads", action="store_true",
                   help="also time the dense path without a backward on one thread against --threads threads")
    p.add_argument("--dense-threads-train", action="store_true",
                   help="--dense-threads times training steps (forward and backward) instead")
    p.add_argument("--torch-one-thread", action="store_true",
                   help="also time torch's nn.LSTM/nn.GRU training steps under runtime.one_thread.on_one_thread "
                        "against plain, on --threads threads")
    p.add_argument("--lm", action="store_true", help="also time the word_language_model example's batches")
    p.add_argument("--epoch", action="store_true", help="also time whole epochs of the word_language_model example")
    p.add_argument("--epoch-batches", type=int, default=100, help="training batches per epoch")
    p.add_argument("--epoch-rounds", type=int, default=5, help="epochs per model")
    p.add_argument("--lm-vocab", type=int, default=10_000)
    p.add_argument("--quick", action="store_true", help="few samples: checks the script, not for results")
    p.add_argument("--out", default=None, help=out_help("small_lstm_cpu.md"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    global clock
    clock = CLOCK[args.clock]
    if args.quick:
        args.rounds, args.min_time, args.epoch_batches, args.epoch_rounds = 2, 0.0, 2, 1
    args.path = results_path(args.out, "small_lstm_cpu.md")
    announce(TITLE, None, args.path)
    sections = {}
    if not args.no_main:
        main_table(args, sections)
    if args.lm:
        lm_batches(args, sections)
    if args.epoch:
        lm_epoch(args, sections)
    if args.sweep:
        sweep(args, sections)
    if args.dense_threads:
        dense_threads(args, sections)
    if args.torch_one_thread:
        torch_one_thread(args, sections)
    finish(args.path)


if __name__ == "__main__":
    main()
