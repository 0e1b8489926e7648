"""The steps of one run (:class:`StepRunner`) and the buffers its backward reads, segment by segment:
kept by the forward (:func:`stored_segments`: one segment of all the steps, the states read back from
Y) or, with ``recompute_every`` k, computed again from the state kept every k steps
(:func:`recomputed_segments`), with the same calls on the same inputs, so the same numbers bit for bit
(:mod:`.sequence` says when and why).
"""
from __future__ import annotations

import torch

from .config import Config
from .products import mm

__all__ = ["StepRunner", "KeptStates", "recomputes", "last_start", "stored_segments", "step_tensors",
           "recomputed_segments", "input_part"]


def input_part(w_ih, idx_ih, x_t, bias):
    """W_ih x_t (+ bias) of one input step (G*H x B); a dense W_ih adds the bias in its product."""
    if idx_ih is None and bias is not None:
        return torch.addmm(bias[:, None], w_ih, x_t)
    g = mm(w_ih, idx_ih, x_t)
    return g if bias is None else g.add_(bias[:, None])


class KeptStates:
    """The states h_0 .. h_S of one run in processing order, read from where the forward left
    them: h_0, the output Y's blocks (the state after each input step) and, between them, a
    CT-RNN's Euler sub-steps (``inner``: {k: h_k}). No second copy of Y is kept."""

    def __init__(self, h0, y, inner: dict, order, U: int):
        self.h0, self.y, self.inner, self.order, self.U = h0, y, inner, order, U

    def __getitem__(self, k: int) -> torch.Tensor:
        if k == 0:
            return self.h0
        if k % self.U:
            return self.inner[k]
        return self.y[self.order[k // self.U - 1]]


def recomputes(cfg: Config, cell) -> int:
    """The recomputation interval k of a run (``cfg.recompute_every``), or 0 when every step's
    activations are kept: asked for none, or k not below the run's steps (one segment of all the
    steps would keep as much as storing them)."""
    k = cfg.recompute_every
    return 0 if k is None or k >= cfg.steps * cell.unfolds(cfg) else k


def last_start(steps: int, k: int) -> int:
    """The first step of a recomputed run's last segment (``steps`` steps, interval k): the forward
    keeps that segment's steps for its backward, which runs first; only the steps before it are
    run again."""
    return (steps - 1) // k * k


class StepRunner:
    """The forward's steps of one run, from any step on: the forward runs them all, the backward
    of a recomputed run one segment at a time, with the same calls on the same inputs (the same
    numbers, bit for bit)."""

    def __init__(self, cfg: Config, cell, x, w_ih, w_hh, bias, b_hh, gx, fused: bool):
        self.cfg, self.cell, self.x, self.w_ih, self.w_hh, self.bias, self.gx = cfg, cell, x, w_ih, w_hh, bias, gx
        self.step, _ = cell.steps(fused)
        self.U = cell.unfolds(cfg)
        self.tail = ((b_hh,) if cell.hidden_bias else ()) + cell.params(cfg)
        self.order = range(cfg.steps - 1, -1, -1) if cfg.reverse else range(cfg.steps)

    def steps(self, lo: int, hi: int, h, c):
        """Steps lo .. hi-1 (processing order, CT-RNN sub-steps counted) from the state (h, c)
        before step lo: yields (s, input step t, whether s ends t, (h', c', saved activations))."""
        cfg, cell, B, U = self.cfg, self.cell, self.cfg.batch, self.U
        g = None
        for s in range(lo, hi):
            t, u = self.order[s // U], s % U
            if g is None or u == 0:  # the input part of input step t, once for its sub-steps
                g = self.gx[:, t * B:(t + 1) * B] if self.gx is not None else \
                    input_part(self.w_ih, cfg.idx_ih, self.x[t], self.bias)
            h, c, a = cell.forward_step(self.step, self.w_hh, cfg.idx_hh, g, h, c, self.tail)
            yield s, t, u == U - 1, (h, c, a)


def stored_segments(ctx, cell, y, h0, rest, order, U):
    """The backward's buffers of a run that kept every step: one segment of all the steps, the
    states read back from Y (no second copy), the c's and activations as saved."""
    n_inner = len(ctx.inner_keys)
    inner = dict(zip(ctx.inner_keys, rest[:n_inner]))
    cs, acts = rest[n_inner:n_inner + ctx.n_c], rest[n_inner + ctx.n_c:]
    return [(0, ctx.cfg.steps * U, {"h": KeptStates(h0, y, inner, order, U), "c": cs, "acts": acts})]


def step_tensors(steps):
    """The tensors of a list of steps' (h', c', activations), None left out."""
    return [v for step in steps for v in step if v is not None]


def recomputed_segments(ctx, cell, x, w_ih, w_hh, b_hh, h0, rest):
    """The backward's buffers of a recomputed run, segment by segment from the last: each one's
    states, c's and activations computed again from the state kept at its start, alive while
    that segment's backward runs (the loop drops them before asking for the next)."""
    cfg = ctx.cfg
    c0, bias, gx, *kept = rest
    n = len(ctx.kept)
    starts = {0: (h0, c0)}
    for j, s in enumerate(ctx.kept):
        starts[s] = (kept[j], kept[n + j] if cell.cell_state else None)
    # the last segment as the forward left it, taken once (a second backward, retain_graph,
    # recomputes it like the others, as does one after an in-place change of an output)
    last, ctx.last_segment = ctx.last_segment, None
    if last is not None and [v._version for v in step_tensors(last)] != ctx.last_versions:
        last = None
    run = StepRunner(cfg, cell, x, w_ih, w_hh, bias, b_hh, gx, ctx.fused)
    S, k = cfg.steps * run.U, recomputes(cfg, cell)
    for lo in range(last_start(S, k), -1, -k):
        hi = min(lo + k, S)
        h, c = starts.pop(lo)
        hs, cs, acts = {lo: h}, {lo: c}, {}
        if last is not None:
            for s, (h, c, a) in enumerate(last, lo):
                hs[s + 1], cs[s + 1], acts[s] = h, c, a
            last = None
        else:
            for s, _, _, (h, c, a) in run.steps(lo, hi, h, c):
                hs[s + 1], cs[s + 1], acts[s] = h, c, a
        yield lo, hi, {"h": hs, "c": cs, "acts": acts}
        del hs, cs, acts
