"""SparseODERNN: the Neural-ODE RNN of Zhang et al. (Communications Physics 2023, "Universal
structural patterns in sparse recurrent neural networks", Person-activity task) with a sparse
recurrent matrix; a sibling of :class:`~sparse_engine.nn.SparseCTRNN`.

Within each input step x_t (held constant) the state follows

    dh/dt = tanh(W_ih x_t + W_hh h + bias)

integrated over ``unfolds`` steps of length ``dt`` (the paper's code: 6 steps of 0.01 with the
classic fourth-order Runge-Kutta rule). Unlike the CT-RNN there is no leak term -h/tau.

``method='rk4'`` (default) runs that classic RK4 here, composed from
:func:`sparse_engine.ops.spmm` and differentiated by autograd. Any other ``method`` (a
torchdiffeq method name: 'dopri5', 'euler', 'midpoint', ...) or ``adjoint=True`` solves each
input step with torchdiffeq (``odeint``, or ``odeint_adjoint``, whose backward pass re-solves
the ODE instead of storing the steps: memory independent of the number of solver steps);
fixed-grid methods use ``dt`` as their step. torchdiffeq is an optional dependency (the ``ode``
extra); note its 'rk4' is the 3/8-rule variant, equal to the classic rule to fourth order.

Defaults as the paper: only the recurrent matrix sparse (``sparse='recurrent'``), W_ih ~ N(0, 1),
W_hh values ~ N(0, 1/H) at a random pattern, bias zero. Shapes as SparseCTRNN: input (T, B, I),
batch-first (B, T, I) or unbatched (T, I); ``hx``/``h_n`` (1, B, H) (unbatched (1, H)); output
(T, B, H), the state at the end of each input step.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..recurrent import matmul, weight_args
from .sequences import caller_layout, initial_state, sequence_input
from .weights import check_positive_int, make_weight, sparse_flags

__all__ = ["SparseODERNN"]

#: torchdiffeq's fixed-grid methods, which take ``dt`` as their step size
FIXED_GRID = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams")
#: torchdiffeq's adaptive-step methods (its default tolerances)
ADAPTIVE = ("dopri8", "dopri5", "bosh3", "fehlberg2", "adaptive_heun")


class _Field(nn.Module):
    """The vector field of one input step for torchdiffeq: state (h, gx), d gx/dt = 0, so that
    the adjoint method also returns the gradient of the input part gx."""

    def __init__(self, layer: "SparseODERNN"):
        super().__init__()
        self.layer = layer

    def forward(self, t, state):
        h, gx = state
        return self.layer.field(h, gx), torch.zeros_like(gx)


class SparseODERNN(nn.Module):
    """Neural-ODE RNN layer: ``output, h_n = layer(input, hx)``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, batch_first: bool = False,
                 dt: float = 0.01, unfolds: int = 6, method: str = "rk4", adjoint: bool = False, *,
                 density: float | None = None, epsilon: float | None = None, sparse: str = "recurrent",
                 device=None, dtype=None):
        super().__init__()
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        check_positive_int("unfolds", unfolds)
        if not (isinstance(dt, (int, float)) and dt > 0):
            raise ValueError(f"dt must be a number > 0, got {dt!r}")
        if method not in FIXED_GRID + ADAPTIVE:
            raise ValueError(f"method must be one of {FIXED_GRID + ADAPTIVE}, got {method!r}")
        if method != "rk4" or adjoint:
            _torchdiffeq()  # fail at construction, not at the first forward
        self.input_size, self.hidden_size, self.batch_first = input_size, hidden_size, bool(batch_first)
        self.dt, self.unfolds, self.method, self.adjoint = float(dt), unfolds, method, bool(adjoint)
        self.has_bias, self.sparse = bool(bias), sparse
        sp_ih, sp_hh = sparse_flags(sparse)
        dtype = dtype or torch.get_default_dtype()
        self.weight_ih = make_weight(hidden_size, input_size, sp_ih, hidden_size, density, epsilon, device, dtype)
        self.weight_hh = make_weight(hidden_size, hidden_size, sp_hh, hidden_size, density, epsilon, device, dtype)
        with torch.no_grad():  # the paper's initialisation
            weight_args(self.weight_ih)[0].normal_(0.0, 1.0)
            weight_args(self.weight_hh)[0].normal_(0.0, 1.0 / math.sqrt(hidden_size))
        self.bias = nn.Parameter(torch.zeros(hidden_size, device=device, dtype=dtype)) if bias else None
        self._field = [_Field(self)]  # a list: not a child module (it would register the layer twice)

    def field(self, h: torch.Tensor, gx: torch.Tensor) -> torch.Tensor:
        """dh/dt for feature-major h (H, B) and input part gx = W_ih x + bias (H, B)."""
        return torch.tanh(gx + matmul(self.weight_hh, h))

    def _rk4(self, h, gx):
        dt = self.dt
        for _ in range(self.unfolds):
            k1 = self.field(h, gx)
            k2 = self.field(h + 0.5 * dt * k1, gx)
            k3 = self.field(h + 0.5 * dt * k2, gx)
            k4 = self.field(h + dt * k3, gx)
            h = h + dt * (k1 + 2 * k2 + 2 * k3 + k4) / 6
        return h

    def _torchdiffeq(self, h, gx):
        odeint, odeint_adjoint = _torchdiffeq()
        t = torch.tensor([0.0, self.dt * self.unfolds], dtype=h.dtype, device=h.device)
        options = {"step_size": self.dt} if self.method in FIXED_GRID else None
        field = self._field[0]
        if self.adjoint:
            params = tuple(p for p in self.parameters() if p.requires_grad)
            hs, _ = odeint_adjoint(field, (h, gx), t, method=self.method, options=options, adjoint_params=params)
        else:
            hs, _ = odeint(field, (h, gx), t, method=self.method, options=options)
        return hs[-1]

    def forward(self, input, hx=None):
        ref = weight_args(self.weight_hh)[0]
        x, batched = sequence_input(type(self).__name__, input, self.input_size, self.batch_first, ref)
        T, B, _ = x.shape
        H = self.hidden_size
        want = (1, B, H) if batched else (1, H)
        h = initial_state(hx, "hx", want, batched, ref, x)[0].t()
        gx = matmul(self.weight_ih, x.reshape(T * B, -1).t())
        if self.bias is not None:
            gx = gx + self.bias[:, None]
        gx = gx.view(H, T, B)
        solve = self._rk4 if self.method == "rk4" and not self.adjoint else self._torchdiffeq
        outputs = []
        for t in range(T):
            h = solve(h, gx[:, t])
            outputs.append(h)
        out = torch.stack(outputs).transpose(1, 2)
        h_n = h.t().unsqueeze(0).contiguous()
        return caller_layout(out, self.batch_first, batched), (h_n if batched else h_n[:, 0])

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, bias={self.has_bias}, sparse={self.sparse!r}, dt={self.dt}, "
                f"unfolds={self.unfolds}, method={self.method!r}" + (", adjoint=True" if self.adjoint else "")
                + (", batch_first=True" if self.batch_first else ""))


def _torchdiffeq():
    try:
        from torchdiffeq import odeint, odeint_adjoint
    except ImportError:  # pragma: no cover - the test extra installs it
        raise ImportError("SparseODERNN with method other than 'rk4' or adjoint=True needs torchdiffeq: "
                          "pip install 'sparse-engine[ode]'") from None
    return odeint, odeint_adjoint

