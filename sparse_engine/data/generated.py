"""Data made on the spot or shipped inside a dependency: nothing to download."""
from __future__ import annotations

import numpy as np
import torch


def mackey_glass(n: int, *, tau: int = 17, beta: float = 0.2, gamma: float = 0.1, power: int = 10,
                 dt: float = 0.1, subsample: int = 10, x0: float = 1.2, transform: str = "tanh",
                 seed: int | None = 0) -> torch.Tensor:
    """``n`` samples of the Mackey-Glass series dx/dt = beta x(t-tau) / (1 + x(t-tau)^power) - gamma x,
    integrated with RK4 at step ``dt`` and sampled every ``subsample`` steps (time unit 1).

    ``transform="tanh"`` returns tanh(x - 1), the scaling of the widely used
    ``MackeyGlass_t17.txt`` (values in about [-0.55, 0.35]); ``"none"`` returns x.
    The history before t=0 is ``x0`` plus small noise from ``seed`` (None: constant x0).
    """
    if n < 0 or tau <= 0 or dt <= 0 or subsample <= 0:
        raise ValueError("n must be >= 0 and tau, dt, subsample > 0")
    if transform not in ("tanh", "none"):
        raise ValueError(f"transform must be 'tanh' or 'none', got {transform!r}")
    delay = int(round(tau / dt))
    rng = np.random.default_rng(seed)
    steps = n * subsample + 1
    x = np.empty(delay + steps)
    x[: delay + 1] = x0 + (0.0 if seed is None else 0.01 * rng.standard_normal(delay + 1))

    def f(xt, xd):
        return beta * xd / (1.0 + xd**power) - gamma * xt

    for i in range(delay, delay + steps - 1):
        xd0, xd1 = x[i - delay], x[i - delay + 1]
        xdm = 0.5 * (xd0 + xd1)  # delayed value at the half step, interpolated
        k1 = f(x[i], xd0)
        k2 = f(x[i] + 0.5 * dt * k1, xdm)
        k3 = f(x[i] + 0.5 * dt * k2, xdm)
        k4 = f(x[i] + dt * k3, xd1)
        x[i + 1] = x[i] + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    series = x[delay + subsample::subsample][:n]
    if transform == "tanh":
        series = np.tanh(series - 1.0)
    return torch.tensor(series, dtype=torch.float32)


def sequence_windows(series: torch.Tensor, length: int, horizon: int = 1):
    """(inputs, targets) for next-value prediction: inputs[i] = series[i:i+length, None],
    targets[i] = series[i+horizon : i+length+horizon, None] (sequence to sequence)."""
    if length <= 0 or horizon <= 0:
        raise ValueError("length and horizon must be positive")
    count = series.numel() - length - horizon + 1
    if count <= 0:
        raise ValueError(f"series of {series.numel()} values is too short for length={length}, horizon={horizon}")
    idx = torch.arange(length)[None, :] + torch.arange(count)[:, None]
    return series[idx].unsqueeze(-1), series[idx + horizon].unsqueeze(-1)


def digits():
    """scikit-learn's bundled 8x8 digits: (images (1797, 64) float32 in [0, 1], labels int64)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return torch.tensor(X / 16.0, dtype=torch.float32), torch.tensor(y)
