"""Word-level language-model corpora: Penn Treebank and WikiText-2 from the standard files a
user gives (nothing is downloaded), and a small generated corpus shipped in the package for
tests and demos.

Tokenisation is the one of the PyTorch word-language-model example that Selfish-RNN (and
AWD-LSTM) use: each line is split on whitespace and ends with ``<eos>``; the vocabulary is
built in order of first appearance over train, valid and test. The results are 1-D int64
token streams; :func:`batchify` and :func:`get_batch` cut them as those codes do (B columns,
windows of T steps, targets shifted by one).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["Corpus", "CORPUS_FILES", "load_corpus", "tiny_corpus", "batchify", "get_batch"]

#: the file names looked for in ``data_dir``, per corpus, in split order (train, valid, test);
#: PTB as in Mikolov's simple-examples, or the plain names of Selfish-RNN's ``data/penn``
CORPUS_FILES = {
    "ptb": [("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"), ("train.txt", "valid.txt", "test.txt")],
    "wikitext2": [("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens")],
}
EOS = "<eos>"


@dataclass
class Corpus:
    """Three token streams and the vocabulary (``vocab[i]`` is the word of id i)."""
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    vocab: list[str]

    def __len__(self) -> int:  # the vocabulary size, as ``len(corpus.dictionary)`` in the originals
        return len(self.vocab)


def _from_lines(splits: list[list[str]]) -> Corpus:
    word_id: dict[str, int] = {}
    streams = []
    for lines in splits:
        ids = []
        for line in lines:
            for word in line.split() + [EOS]:
                ids.append(word_id.setdefault(word, len(word_id)))
        streams.append(torch.tensor(ids, dtype=torch.int64))
    return Corpus(*streams, vocab=list(word_id))


#: where the corpora come from (sparse_engine.data.fetch does not fetch them)
CORPUS_SOURCES = ("PTB: data/ptb.{train,valid,test}.txt of Mikolov's simple-examples, "
                  "www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz; WikiText-2 as {train,valid,test}.txt: "
                  "word_language_model/data/wikitext-2 of github.com/pytorch/examples")


def load_corpus(data_dir, name: str = "auto") -> Corpus:
    """PTB (``ptb.{train,valid,test}.txt`` or ``{train,valid,test}.txt``) or WikiText-2
    (``wiki.{train,valid,test}.tokens``) from ``data_dir``. ``name``: 'ptb', 'wikitext2' or
    'auto' (whichever set of files is there). FileNotFoundError names the missing files."""
    if name != "auto" and name not in CORPUS_FILES:
        raise ValueError(f"name must be 'auto' or one of {sorted(CORPUS_FILES)}, got {name!r}")
    d = Path(data_dir)
    if not d.is_dir():
        raise NotADirectoryError(f"data_dir: {d} is not a directory (expected the corpus files in it)")
    names = list(CORPUS_FILES) if name == "auto" else [name]
    candidates = [files for n in names for files in CORPUS_FILES[n]]
    for files in candidates:  # a complete set wins; else report the set with the most files present
        if all((d / f).is_file() for f in files):
            break
    else:
        best = max(candidates, key=lambda fs: sum((d / f).is_file() for f in fs))
        missing = [f for f in best if not (d / f).is_file()]
        raise FileNotFoundError(f"data_dir {d} has no {', '.join(missing)} (expected "
                                + " or ".join("/".join(fs) for fs in candidates) + f"; {CORPUS_SOURCES})")
    splits = []
    for f in files:
        with open(d / f, encoding="utf-8", errors="replace") as text:  # lines as PyTorch's example reads
            lines = list(text)  # them (str.splitlines also breaks at \x0b, \x0c, \x1c-\x1e, \x85, \u2028-9)
        if not any(line.strip() for line in lines):
            raise ValueError(f"{d / f} holds no words")
        splits.append(lines)
    return _from_lines(splits)


# a tiny probabilistic grammar: sentences with agreement and a few long-range choices, so a
# language model has something to learn beyond word frequencies (on the default corpus the
# validation perplexity of the training unigram counts is 21.0, of the bigram counts 5.3)
_NOUNS = {"sg": ["cat", "dog", "bird", "child", "farmer", "river", "engine", "teacher"],
          "pl": ["cats", "dogs", "birds", "children", "farmers", "rivers", "engines", "teachers"]}
_VERBS = {"sg": ["sees", "likes", "follows", "hears", "finds"], "pl": ["see", "like", "follow", "hear", "find"]}
_ADJ = ["small", "old", "quiet", "green", "fast", "happy"]
_PLACE = ["near the hill", "by the sea", "in the town", "under the bridge"]


def _sentence(rng: random.Random) -> str:
    num = rng.choice(["sg", "pl"])
    subj = ("the " + (rng.choice(_ADJ) + " " if rng.random() < 0.4 else "") + rng.choice(_NOUNS[num]))
    obj_num = rng.choice(["sg", "pl"])
    obj = "the " + rng.choice(_NOUNS[obj_num])
    s = f"{subj} {rng.choice(_VERBS[num])} {obj}"
    if rng.random() < 0.3:
        s += " " + rng.choice(_PLACE)
    if rng.random() < 0.25:  # a clause that agrees with the subject again
        s += f" and {rng.choice(_VERBS[num])} the {rng.choice(_NOUNS[rng.choice(['sg', 'pl'])])}"
    return s + " ."


def tiny_corpus(lines: tuple[int, int, int] = (2000, 200, 200), seed: int = 0) -> Corpus:
    """A small generated English-like corpus (44 words, about 19,000 training tokens at the
    default sizes) for tests and demos; deterministic given ``seed``. It is not PTB: its
    perplexities say nothing about the published numbers."""
    if len(lines) != 3 or any(not isinstance(n, int) or n <= 0 for n in lines):
        raise ValueError(f"lines must be three positive ints (train, valid, test), got {lines!r}")
    rng = random.Random(seed)
    return _from_lines([[_sentence(rng) for _ in range(n)] for n in lines])


def batchify(data: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(N,) tokens -> (N // B, B): B contiguous columns, the remainder dropped."""
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if data.dim() != 1:
        raise ValueError(f"data must be a 1-D token stream, got shape {tuple(data.shape)}")
    n = data.numel() // batch_size
    if n < 2:
        raise ValueError(f"data of {data.numel()} tokens is too short for batch_size {batch_size}")
    return data[: n * batch_size].view(batch_size, n).t().contiguous()


def get_batch(source: torch.Tensor, i: int, bptt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows i .. i+T of a batchified stream (T = min(bptt, rows - 1 - i)) and the targets one
    step later, flattened: (T, B) inputs, (T*B,) targets."""
    T = min(bptt, source.shape[0] - 1 - i)
    if T <= 0:
        raise ValueError(f"i={i} leaves no window in a stream of {source.shape[0]} rows")
    return source[i:i + T], source[i + 1:i + 1 + T].reshape(-1)
