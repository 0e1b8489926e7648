"""Schedules of dynamic sparse training, as plain functions of the step so they can be
checked against the papers' formulas and reused by any controller."""
from __future__ import annotations

import math

__all__ = ["cosine_decay", "cubic_density", "narang_threshold"]


def cosine_decay(step: int, total: int, initial: float, final: float = 0.0) -> float:
    """final + (initial - final) * (1 + cos(pi * step / total)) / 2, held at ``final`` after
    ``total`` steps. RigL's update fraction (final=0) and Selfish-RNN's death rate (final=0.005,
    as torch's CosineAnnealingLR with eta_min that sparselearning uses)."""
    if total <= 0:
        raise ValueError(f"total must be > 0, got {total}")
    t = min(max(step, 0), total)
    return final + (initial - final) * 0.5 * (1.0 + math.cos(math.pi * t / total))


def cubic_density(step: int, start: int, end: int, initial: float, final: float) -> float:
    """Zhu and Gupta (2017): s_t = s_f + (s_i - s_f) (1 - (t - t0) / (t_end - t0))^3, written for
    densities (the same formula, since density = 1 - sparsity is affine). ``initial`` before
    ``start``, ``final`` from ``end`` on."""
    if end <= start:
        raise ValueError(f"end must be > start, got start={start}, end={end}")
    p = min(max((step - start) / (end - start), 0.0), 1.0)
    return final + (initial - final) * (1.0 - p) ** 3


def narang_threshold(step: int, q: float, start: int, ramp: int, end: int, freq: int) -> float:
    """Narang et al. (2017) pruning threshold: slope theta = 2 q freq / (2 (ramp - start) +
    3 (end - ramp)) from ``start`` to ``ramp``, then phi = 1.5 theta up to ``end``, so the
    threshold reaches about q (the |w| quantile at the target sparsity) at ``end``:
    eps = theta (t - start + 1) / freq before ramp, (theta (ramp - start + 1) + phi (t - ramp + 1))
    / freq after it. 0 before ``start``; held at its ``end`` value afterwards."""
    if not start < ramp <= end:
        raise ValueError(f"need start < ramp <= end, got {start}, {ramp}, {end}")
    if freq <= 0:
        raise ValueError(f"freq must be > 0, got {freq}")
    if step < start:
        return 0.0
    t = min(step, end)
    theta = 2.0 * q * freq / (2.0 * (ramp - start) + 3.0 * (end - ramp))
    phi = 1.5 * theta
    if t < ramp:
        return theta * (t - start + 1) / freq
    return (theta * (ramp - start + 1) + phi * (t - ramp + 1)) / freq
