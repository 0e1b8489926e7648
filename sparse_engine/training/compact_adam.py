"""Adam whose two moments are stored in bfloat16: 4 bytes a parameter instead of 8.

Why: at 32 nonzeros a row, Adam's float32 moments are the largest tensor of a very large sparse
LSTM's step after its activations (8 bytes of the about 60 a connection costs; docs/memory.md), so
on a small card they decide how many units fit (issue #46). The update is torch.optim.Adam's
(``_single_tensor_adam``, L2 weight decay, no amsgrad), computed in float32 on chunks of each
parameter (at most ``chunk`` elements of float32 temporaries at a time); only the stored moments
are narrowed.

Narrowed by stochastic rounding, not to nearest: with beta2 = 0.999 a step changes the second
moment by 0.1%, less than half of bfloat16's spacing (2^-8 relative), so round-to-nearest would
drop the change and the moment would stop moving. Rounding up with probability equal to the
distance from the lower neighbour keeps every stored moment an unbiased estimate of its float32
value (error below 2^-7 relative each step; tests/training/test_compact_adam.py measures how
close training stays). The random bits come from a counter-based draw per (seed, step, parameter,
chunk): the same run gives the same bits, and a resumed run continues them without extra state.
``state_dtype=torch.float32`` is torch's Adam bit for bit (same chunks, no rounding).
"""
from __future__ import annotations

import torch

__all__ = ["CompactAdam", "round_stochastic"]

#: elements per chunk of the update: its float32 temporaries are a few of these, not a parameter's size
CHUNK = 1 << 20


def round_stochastic(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``x`` (float32) in bfloat16, rounded up in magnitude with probability equal to its distance
    from the value below (in units of bfloat16's spacing), so that the expectation is ``x``: 16
    random bits added to the float32 bit pattern, then the low 16 bits cut."""
    if x.dtype != torch.float32:
        raise TypeError(f"x must be float32, got {x.dtype}")
    noise = torch.randint(0, 1 << 16, x.shape, dtype=torch.int32, device=x.device, generator=generator)
    bits = x.contiguous().view(torch.int32) + noise  # sign-magnitude: the magnitude's low bits
    return bits.bitwise_and_(-(1 << 16)).view(torch.float32).to(torch.bfloat16)  # exact: low bits are 0


class CompactAdam(torch.optim.Optimizer):
    """``torch.optim.Adam(params, lr, betas, eps, weight_decay)`` with its moments ``exp_avg`` and
    ``exp_avg_sq`` kept in ``state_dtype`` (bfloat16 by default, stochastically rounded; float32:
    torch's Adam exactly). ``seed`` keys the rounding's random bits; ``chunk``: elements updated at
    a time. Its state has torch's keys, so the topology controllers remap it as Adam's."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 *, state_dtype: torch.dtype = torch.bfloat16, seed: int = 0, chunk: int = CHUNK):
        if not lr >= 0.0:
            raise ValueError(f"lr must be >= 0, got {lr!r}")
        if not eps >= 0.0:
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        if not (len(betas) == 2 and all(0.0 <= b < 1.0 for b in betas)):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        if state_dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"state_dtype must be torch.float32 or torch.bfloat16, got {state_dtype!r}")
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be an integer >= 1, got {chunk!r}")
        self.state_dtype, self.seed, self.chunk = state_dtype, int(seed), chunk
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def load_state_dict(self, state_dict) -> None:
        """torch's, then the moments back in ``state_dtype`` (torch casts them to the parameter's
        dtype; a bfloat16 value survives the float32 round trip exactly)."""
        super().load_state_dict(state_dict)
        for st in self.state.values():
            for key in ("exp_avg", "exp_avg_sq"):
                if key in st:
                    st[key] = st[key].to(self.state_dtype)

    def _generator(self, device: torch.device, step: int, index: int, chunk: int) -> torch.Generator:
        g = torch.Generator(device=device)
        g.manual_seed(hash((self.seed, step, index, chunk)) & (2**63 - 1))
        return g

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        index = -1
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                index += 1
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("CompactAdam does not take sparse gradients")
                if p.dtype != torch.float32:  # the update is float32 arithmetic (round_stochastic's input)
                    raise TypeError(f"CompactAdam updates float32 parameters, got {p.dtype} (parameter {index})")
                if not p.is_contiguous():
                    raise ValueError("CompactAdam updates contiguous parameters only")
                st = self.state[p]
                if not st:
                    st["step"] = torch.tensor(0.0)
                    st["exp_avg"] = torch.zeros_like(p, dtype=self.state_dtype)
                    st["exp_avg_sq"] = torch.zeros_like(p, dtype=self.state_dtype)
                st["step"] += 1
                step = int(st["step"].item())
                self._update(p, st, group, beta1, beta2, step, index)
        return loss

    def _update(self, p, st, group, beta1, beta2, step: int, index: int) -> None:
        """One parameter's update, chunk by chunk, in torch's order of operations."""
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        step_size = lr / (1 - beta1**step)
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        param, grad = p.view(-1), p.grad.reshape(-1)
        m_all, v_all = st["exp_avg"].view(-1), st["exp_avg_sq"].view(-1)
        narrow = self.state_dtype != torch.float32
        for c, a in enumerate(range(0, param.numel(), self.chunk)):
            b = min(a + self.chunk, param.numel())
            g = grad[a:b]
            if wd != 0:
                g = g.add(param[a:b], alpha=wd)
            m, v = m_all[a:b].float(), v_all[a:b].float()  # float32 state: the state itself
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (v.sqrt() / bias_correction2_sqrt).add_(eps)
            param[a:b].addcdiv_(m, denom, value=-step_size)
            if narrow:
                gen = self._generator(p.device, step, index, c)
                m_all[a:b] = round_stochastic(m, gen)
                v_all[a:b] = round_stochastic(v, gen)
            del m, v, denom  # before the next chunk's (the memory model counts one chunk's temporaries)
