"""Named training recipes.

* :data:`ALGORITHMS` / :func:`make_controller`: one controller per algorithm name with the
  settings ``sparse-engine train --algorithm`` uses, so that the command line and a script pick
  the same SET / GMP / DeepR / Selfish-RNN / RigL configuration by name.
* :data:`RECIPES` / :func:`make_recipe_controller`: whole published set-ups
  (``sparse-engine train --recipe NAME``): the task, model, optimizer settings, epochs and the
  sparsification schedule of a paper's public code, with the published result to print beside
  ours. See docs/papers.md for what each matches and what it does not.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

ALGORITHMS = ("none", "set", "gmp", "deepr", "selfish", "rigl")


#: the density ``--algorithm gmp`` prunes each sparse matrix to
GMP_FINAL_DENSITY = 0.05


def make_controller(name: str, model, opt, steps: int, seed: int, callbacks):
    """The controller for algorithm ``name`` (None for ``"none"``) over ``steps`` optimizer
    steps in all; schedules that end or update periodically are set from ``steps``."""
    from . import SET, DeepR, GradualMagnitudePruning, RigL, SelfishRNN  # the package's names, at call time

    if name == "none":
        return None
    if name == "set":
        return SET(model, opt, zeta=0.3, seed=seed, callbacks=callbacks)
    if name == "gmp":
        return GradualMagnitudePruning(model, opt, final_density=GMP_FINAL_DENSITY, end_step=max(2, int(0.75 * steps)),
                                       frequency=max(1, steps // 20), seed=seed, callbacks=callbacks)
    if name == "deepr":
        return DeepR(model, opt, l1=1e-5, temperature=1e-5, seed=seed, callbacks=callbacks)
    if name == "selfish":
        return SelfishRNN(model, opt, total_steps=steps, seed=seed, callbacks=callbacks)
    if name == "rigl":
        return RigL(model, opt, end_step=max(2, int(0.75 * steps)), update_every=max(1, steps // 20),
                    seed=seed, callbacks=callbacks)
    raise ValueError(f"--algorithm must be one of {ALGORITHMS}")


# ------------------------------------------------------------------ published recipes
ZHANG_CODE = "github.com/XinjieZhang/sparse-RNNs"


@dataclass(frozen=True)
class Recipe:
    """One published set-up. ``train`` holds :class:`~sparse_engine.runs.TrainConfig` fields
    (task, model, hidden, density, sparse, algorithm, epochs, batch_size, lr); the rest says how
    the controller is built. An epoch is the code's "epoch" (its unit of logging, pruning,
    rewiring and graph rebuilding): one pass, or the batches the task's ``epoch_batches`` says.
    ``clip_value``: gradients clipped to [-c, c] before each step. ``variant``: the paper's
    preprocessing of the task (:data:`~sparse_engine.data.tasks.VARIANTS`). ``published``:
    (metric, value or None, where it comes from). ``zhang_init``: the model's weights are drawn
    as Zhang et al.'s (:func:`zhang_init`, with the keyword arguments ``init``). ``fresh_adam``:
    the 1-based epochs after which the code starts a new Adam (it rebuilds its graph from the
    weights): ``"all"``, a (first, last) range, or None (never). ``softmax_loss``: the training
    loss is the cross-entropy of the class probabilities taken as scores (a softmax applied
    twice), as Zhang et al.'s SMS net."""
    name: str
    source: str
    train: dict
    controller: dict
    clip_value: float | None = None
    variant: str | None = None
    published: tuple = ("test_acc", None, "")
    notes: str = ""
    zhang_init: bool = True
    init: dict = field(default_factory=dict)
    fresh_adam: object = None
    softmax_loss: bool = False

    def fresh_optimizer(self, epoch: int, epochs: int) -> bool:
        """Whether the optimizer starts afresh after ``epoch`` (1-based) of a run of ``epochs``;
        a shorter run than the recipe's scales the range with its schedule."""
        if self.fresh_adam is None or epoch >= epochs:
            return False
        if self.fresh_adam == "all":
            return True
        first, last = self.fresh_adam
        scale = epochs / self.train["epochs"]
        return round(first * scale) <= epoch <= round(last * scale)


# Zhang et al. 2023 ("Universal structural patterns in sparse recurrent neural networks"): a vanilla
# tanh RNN whose recurrent matrix alone is sparsified, from dense to density 0.05 by pruning, or at
# density 0.05 from the start by SET or DEEP R rewiring; Adam; hyper-parameters from the get_default_hp
# and __main__ of each script of the public code (MNIST/, SMS/, Gesture/, Mackey_Glass/).
# Why every ``published`` value is None (as far as could be read here): the code's
# repository holds no result for these set-ups (its README gives none; its only stored runs,
# analysis/lesion_experiments/{Gesture,MG,MNIST}/fixed_sparse_*_p_0.05_*, train a fixed random mask
# with 15 planted feed-forward motifs and no pruning or rewiring, for the motif-lesion experiment),
# and the stored copies of the paper reachable here (nature.com, researchbunny.com) hold only its
# abstract and the opening of its Introduction, which state no accuracy or MSE. Results, Methods,
# figure captions and the Supplementary Information could not be read, so no number is taken and
# none is read off a plot. To add one: published=(metric, value, "paper, <where>").
_PUBLISHED_NOTE = ("no published number found: the public code gives none for this set-up and the paper's "
                   "results section could not be read here (only its abstract and introduction); not transcribed")
# Every task follows its scripts' whole pipeline: the data variant "zhang" (splits, windows,
# vocabulary, normalisation; MNIST's 50-batch epochs), the scripts' init (input weights N(0, 1/n_in)
# for MNIST and SMS, N(0, 1) for Gesture and Mackey-Glass; zero recurrent bias; the readout's init),
# gradients clipped to [-1, 1] (all four nets), a new Adam whenever the code rebuilds its graph
# (``fresh_prune``: the epochs after which a pruning script does; a rewiring script does after every
# epoch), and the pruning schedule in the code's epochs (``units``: the first, ramp and last update
# as our schedule counts them, one epoch after the code's, see make_recipe_controller).
_ZHANG_TASKS = {
    # lr: (pruning script, rewiring script); epochs: the code's; deepr: (alpha = l1, sigma = noise)
    "mnist": dict(hidden=150, batch_size=128, lr=(1e-3, 1e-3), epochs=201, schedule="narang", zeta=0.2,
                  deepr=(1e-5, 1e-5), script="MNIST/MNIST_{}.py",
                  why_epochs="training_iters 201 of 50 batches of 128 (10,050 steps)",
                  init=dict(input_scale="fan_in", readout="normal", zero_bias=True),
                  units=dict(start=2, ramp=51, end=101), fresh_prune=(3, 100)),
    "sms": dict(hidden=100, batch_size=128, lr=(5e-4, 5e-4), epochs=101, schedule="cubic", zeta=0.1,
                deepr=(1e-5, 1e-6), script="SMS/SMS_{}.py", why_epochs="n_epochs 101",
                init=dict(input_scale="fan_in", readout="truncnormal", zero_bias=True, embedding="uniform"),
                units=dict(start=6, end=51), fresh_prune=(6, 51), softmax_loss=True),
    "gesture": dict(hidden=128, batch_size=32, lr=(5e-3, 1e-2), epochs=201, schedule="cubic", zeta=0.1,
                    deepr=(1e-3, 1e-3), script="Gesture/Gesture_{}.py", why_epochs="training_iters 201",
                    init=dict(input_scale="one", readout="normal", zero_bias=True),
                    units=dict(start=6, end=101), fresh_prune=(7, 100)),
    "mackey-glass": dict(hidden=128, batch_size=12, lr=(1e-3, 2e-3), epochs=101, schedule="narang",
                         zeta=0.2, deepr=(1e-5, 1e-5), script="Mackey_Glass/MG_{}.py",
                         why_epochs="n_epochs 101, each 10 passes of 6 batches over its 72 windows",
                         init=dict(input_scale="one", readout="glorot", zero_bias=True),
                         units=dict(start=2, ramp=26, end=51), fresh_prune=(3, 50)),
}


def _zhang_recipes() -> dict:
    out = {}
    for task, s in _ZHANG_TASKS.items():
        metric = "test_loss" if task == "mackey-glass" else "test_acc"
        base = dict(task=task, model="rnn", hidden=s["hidden"], sparse="recurrent", epochs=s["epochs"],
                    batch_size=s["batch_size"])
        for kind in ("prune", "set", "deepr"):
            script = s["script"].format("pruning" if kind == "prune" else "rewiring")
            if kind == "prune":
                train = dict(base, density=1.0, algorithm="gmp", lr=s["lr"][0])
                ctl = dict(kind="gmp", schedule=s["schedule"], final_density=0.05)
            elif kind == "set":
                train = dict(base, density=0.05, algorithm="set", lr=s["lr"][1])
                ctl = dict(kind="set", zeta=s["zeta"])
            else:
                train = dict(base, density=0.05, algorithm="deepr", lr=s["lr"][1])
                ctl = dict(kind="deepr", l1=s["deepr"][0], noise=s["deepr"][1])
            if kind == "prune":
                ctl["units"] = s["units"]
            name = f"zhang-{task}-{kind}"
            out[name] = Recipe(name=name, source=f"Zhang et al. 2023; {ZHANG_CODE} {script}", train=train,
                               controller=ctl, clip_value=1.0, variant="zhang", published=(metric, None, _PUBLISHED_NOTE),
                               notes=s["why_epochs"], init=s["init"],
                               fresh_adam="all" if kind != "prune" else s["fresh_prune"],
                               softmax_loss=s.get("softmax_loss", False))
    return out


RECIPES: dict[str, Recipe] = _zhang_recipes()


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; ValueError listing the names otherwise."""
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {', '.join(RECIPES)}; got {name!r}")
    return RECIPES[name]


def make_recipe_controller(recipe: Recipe, model, opt, batches: int, epochs: int, seed: int, callbacks):
    """The controller of ``recipe`` for a run of ``epochs`` epochs of ``batches`` steps, in the
    code's epochs: pruning once an epoch from ``units["start"]`` to ``units["end"]`` (Narang et
    al.'s ramp at ``units["ramp"]``, q recomputed from the current weights at every update, as
    their Pruning_Algorithm; Zhu and Gupta's cubic schedule from dense), a shorter run scaling
    them; SET and DEEP R rewire after every epoch. The code prunes after its 0-based epoch e
    with the iteration count e * batches, so its update after our epoch k is our schedule's at
    k - 1: the units given are the code's plus one."""
    from . import SET, DeepR, GradualMagnitudePruning

    c = recipe.controller
    if c["kind"] == "gmp":
        scale = epochs / recipe.train["epochs"]
        at = {k: max(1, round(v * scale)) for k, v in c["units"].items()}
        at["end"] = max(at["end"], at.get("ramp", at["start"]) + 1, at["start"] + 1)
        if c["schedule"] == "narang":
            at["ramp"] = min(max(at["ramp"], at["start"] + 1), at["end"])
            return GradualMagnitudePruning(model, opt, final_density=c["final_density"], schedule="narang",
                                           start_step=at["start"] * batches, ramp_step=at["ramp"] * batches,
                                           end_step=at["end"] * batches, frequency=batches, requantile=True,
                                           seed=seed, callbacks=callbacks)
        return GradualMagnitudePruning(model, opt, final_density=c["final_density"], schedule="cubic",
                                       initial_density=1.0, start_step=at["start"] * batches,
                                       end_step=at["end"] * batches, frequency=batches, seed=seed,
                                       callbacks=callbacks)
    if c["kind"] == "set":
        return SET(model, opt, zeta=c["zeta"], rewire_every="epoch", seed=seed, callbacks=callbacks)
    return DeepR(model, opt, rule="zhang", l1=c["l1"], noise=c["noise"], rewire_every="epoch", seed=seed,
                 callbacks=callbacks)


@torch.no_grad()
def zhang_init(model, seed: int, *, input_scale: str = "fan_in", readout: str | None = None,
               zero_bias: bool = False, embedding: str | None = None) -> None:
    """Zhang et al.'s initial weights: W_rec ~ N(0, 1/n_hidden) at its stored positions (a
    0.05-density W_rec is not rescaled, as in their code); W_in ~ N(0, 1/n_in)
    (``input_scale="fan_in"``: their MNIST and SMS scripts) or N(0, 1) (``"one"``: Gesture,
    Mackey-Glass). ``readout``: None keeps the model's; "normal" N(0, 1) (their MNIST and Gesture
    nets' tf.random_normal_initializer), "glorot" Glorot-uniform (their Mackey-Glass net), its
    bias 0; "truncnormal" N(0, 0.1^2) redrawn beyond two deviations, bias 0.1 (their SMS net).
    ``zero_bias``: the recurrent bias 0 (their cell's zeros initializer). ``embedding``:
    "uniform" U(-1, 1) for every row, the padding id's too, which then trains (their SMS net:
    id 0 is both padding and the unknown words)."""
    if (input_scale not in ("fan_in", "one") or readout not in (None, "normal", "glorot", "truncnormal")
            or embedding not in (None, "uniform")):
        raise ValueError(f"input_scale must be 'fan_in' or 'one', readout None, 'normal', 'glorot' or 'truncnormal' "
                         f"and embedding None or 'uniform'; got {input_scale!r}, {readout!r}, {embedding!r}")
    g = torch.Generator().manual_seed(int(seed) + 1000)
    rnn = model.rnn
    for name, p in rnn.named_parameters():
        if name.startswith("bias"):
            if zero_bias:
                p.zero_()
            continue
        fan_in = rnn.input_size if "ih" in name else rnn.hidden_size
        if "ih" in name and input_scale == "one":
            fan_in = 1
        # a sparse weight's values Parameter, or a dense matrix: the same draw per stored entry
        p.copy_((torch.randn(p.shape, generator=g) / math.sqrt(fan_in)).to(p.dtype))
    if readout is not None:
        w = model.readout.weight
        if readout == "normal":
            w.copy_(torch.randn(w.shape, generator=g))
        elif readout == "truncnormal":
            torch.nn.init.trunc_normal_(w, std=0.1, a=-0.2, b=0.2, generator=g)
        else:
            torch.nn.init.xavier_uniform_(w, generator=g)
        model.readout.bias.fill_(0.1 if readout == "truncnormal" else 0.0)
    if embedding is not None:
        model.embed.weight.uniform_(-1.0, 1.0, generator=g)
        model.embed.padding_idx = None
