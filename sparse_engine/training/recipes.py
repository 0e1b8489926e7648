"""Named dynamic-sparse-training recipes: one controller per algorithm name with the
settings ``sparse-engine train --algorithm`` uses, so that the command line and a script
pick the same SET / GMP / DeepR / Selfish-RNN / RigL configuration by name."""
from __future__ import annotations

ALGORITHMS = ("none", "set", "gmp", "deepr", "selfish", "rigl")


def make_controller(name: str, model, opt, steps: int, seed: int, callbacks):
    """The controller for algorithm ``name`` (None for ``"none"``) over ``steps`` optimizer
    steps in all; schedules that end or update periodically are set from ``steps``."""
    from . import SET, DeepR, GradualMagnitudePruning, RigL, SelfishRNN  # the package's names, at call time

    if name == "none":
        return None
    if name == "set":
        return SET(model, opt, zeta=0.3, seed=seed, callbacks=callbacks)
    if name == "gmp":
        return GradualMagnitudePruning(model, opt, final_density=0.05, end_step=max(2, int(0.75 * steps)),
                                       frequency=max(1, steps // 20), seed=seed, callbacks=callbacks)
    if name == "deepr":
        return DeepR(model, opt, l1=1e-5, temperature=1e-5, seed=seed, callbacks=callbacks)
    if name == "selfish":
        return SelfishRNN(model, opt, total_steps=steps, seed=seed, callbacks=callbacks)
    if name == "rigl":
        return RigL(model, opt, end_step=max(2, int(0.75 * steps)), update_every=max(1, steps // 20),
                    seed=seed, callbacks=callbacks)
    raise ValueError(f"--algorithm must be one of {ALGORITHMS}")
