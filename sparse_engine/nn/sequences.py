"""torch's conventions for a sequence layer's input, output and states, shared by the recurrent
modules: the refusal of a PackedSequence where it is not taken (:func:`check_not_packed`), the
time-major view of a batched / batch-first / unbatched input (:func:`time_major`,
:func:`sequence_input`) and the output in the caller's layout (:func:`caller_layout`), an
initial state given or zero (:func:`initial_state`), the dtype rule of inputs and states
(:func:`check_input_dtype`), and a PackedSequence's positions (:func:`packed_positions`,
:func:`inverse_permutation`).
"""
from __future__ import annotations

import torch
from torch.nn.utils.rnn import PackedSequence

from ..kernels.checks import check_dtype_like

__all__ = ["check_not_packed", "time_major", "caller_layout", "packed_positions", "inverse_permutation",
           "run_by_length", "check_input_dtype", "sequence_input", "initial_state"]


def check_not_packed(input, owner: str) -> None:
    """TypeError for a PackedSequence (modules without packed support: the cells, SparseCTRNN)
    or any other non-tensor ``input``."""
    if isinstance(input, PackedSequence):
        raise TypeError(f"{owner} does not support PackedSequence input; pad the sequences "
                        "(torch.nn.utils.rnn.pad_packed_sequence) and pass the padded tensor")
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")


def time_major(input: torch.Tensor, batch_first: bool) -> tuple[torch.Tensor, bool]:
    """(T, B, F) view of a batched (T, B, F) / batch-first (B, T, F) or unbatched (T, F) input,
    and whether it was batched."""
    batched = input.dim() == 3
    x = input if batched else input.unsqueeze(1)
    if batched and batch_first:
        x = x.transpose(0, 1)
    if x.shape[0] == 0:
        raise ValueError("input must have at least one time step")
    return x, batched


def caller_layout(out: torch.Tensor, batch_first: bool, batched: bool) -> torch.Tensor:
    """The time-major (T, B, F) output in the caller's layout, as torch's modules return it:
    contiguous (T, B, F); for a batch-first batched input its transposed view (B, T, F) (torch's
    ``nn.RNN(batch_first=True)`` output is not contiguous either, and a copy is a full pass over
    the largest tensor of the step); (T, F) for an unbatched one (``batch_first`` does not apply)."""
    out = out.contiguous()
    if not batched:
        return out[:, 0]
    return out.transpose(0, 1) if batch_first else out


def packed_positions(batch_sizes: torch.Tensor, unsorted_indices: torch.Tensor | None):
    """(lengths (B,), pos (T, B)), CPU int64, in the caller's batch order, for a PackedSequence:
    ``lengths[b]`` the steps of sequence b, ``pos[t, b]`` the row of ``data`` holding its step t
    (meaningful for t < lengths[b])."""
    bs = batch_sizes.to("cpu", torch.int64)
    B = int(bs[0])
    start = torch.cumsum(bs, 0) - bs               # row of step t's first sequence
    # position of sequence b in the sorted (longest first) order
    rank = torch.arange(B) if unsorted_indices is None else unsorted_indices.to("cpu", torch.int64)
    lengths = (bs.unsqueeze(0) > torch.arange(B).unsqueeze(1)).sum(1)[rank]
    return lengths, start.unsqueeze(1) + rank.unsqueeze(0)


def inverse_permutation(p: torch.Tensor) -> torch.Tensor:
    """The permutation q with q[p[i]] = i."""
    inv = torch.empty_like(p)
    inv[p] = torch.arange(p.numel(), device=p.device)
    return inv


def run_by_length(data: torch.Tensor, lengths: torch.Tensor, pos: torch.Tensor, h0: torch.Tensor, c0, run):
    """A PackedSequence through a recurrence that takes one batch size for all its steps, with
    torch's semantics: the sequences grouped by length (longest first), ``run(i, x, h0, c0)`` on
    group i alone (x: (L, g, features) time-major; it returns the group's outputs as (L*g, out)
    rows in (step, sequence) order, h_n, c_n), outputs and states put back in the packed order and
    the caller's. ``lengths``, ``pos``: :func:`packed_positions`. Returns (the packed outputs,
    h_n, c_n or None)."""
    dev = data.device
    ys, rows, hs, cs, members = [], [], [], [], []
    for i, L in enumerate(sorted(set(lengths.tolist()), reverse=True)):
        idx = (lengths == L).nonzero().squeeze(1)
        p = pos[:L, idx].to(dev)                   # (L, g): the group's rows of data
        gi = idx.to(dev)
        y, h, c = run(i, data[p], h0[:, gi], None if c0 is None else c0[:, gi])
        ys.append(y)
        rows.append(p.reshape(-1))
        hs.append(h)
        cs.append(c)
        members.append(gi)
    back = inverse_permutation(torch.cat(members))
    return (torch.cat(ys)[inverse_permutation(torch.cat(rows))], torch.cat(hs, 1)[:, back],
            None if c0 is None else torch.cat(cs, 1)[:, back])


def check_input_dtype(input: torch.Tensor, ref: torch.Tensor, name: str = "input") -> None:
    """A recurrent module's input (or initial state ``name``) must have its parameters' dtype
    (``ref``'s), except under autocast, where :func:`~sparse_engine.recurrent.sequence.recurrence`
    casts it: :func:`sparse_engine.kernels.checks.check_dtype_like`'s rule, the ops' too."""
    if input.dtype != ref.dtype:
        check_dtype_like(input, name, ref, "the parameters")


def sequence_input(owner: str, input, input_size: int, batch_first: bool, ref: torch.Tensor):
    """The checked (T, B, I) time-major view of a layer's ``input`` ((T, B, I), batch-first
    (B, T, I), or unbatched (T, I)) and whether it was batched; errors name ``owner``."""
    check_not_packed(input, owner)
    if input.dim() not in (2, 3) or input.shape[-1] != input_size:
        raise ValueError(f"input must be (T, B, {input_size}), (B, T, {input_size}) with batch_first, "
                         f"or (T, {input_size}), got {tuple(input.shape)}")
    check_input_dtype(input, ref)
    return time_major(input, batch_first)


def initial_state(hx, name: str, want: tuple, batched: bool, ref: torch.Tensor, like: torch.Tensor):
    """A layer's initial state as (L, B, H) (zeros when ``hx`` is None); ``want`` is the shape the
    caller must give (unbatched: without B)."""
    if hx is None:
        L, H = want[0], want[-1]
        return like.new_zeros(L, like.shape[1], H)
    if not isinstance(hx, torch.Tensor) or tuple(hx.shape) != tuple(want):
        got = tuple(hx.shape) if isinstance(hx, torch.Tensor) else type(hx).__name__
        raise ValueError(f"{name} must have shape {tuple(want)}, got {got}")
    check_input_dtype(hx, ref, name)
    return hx if batched else hx.unsqueeze(1)
