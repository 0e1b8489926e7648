"""Word-level corpora: PTB / WikiText-2 files written here, the generated tiny corpus, batching."""
import pytest
import torch

from sparse_engine.data import batchify, get_batch, load_corpus, tiny_corpus

SPLITS = {"train": "the cat sat\n\nthe dog\n", "valid": "a cat\n", "test": "the bird sat\n"}


def write(d, names):
    for split, name in zip(("train", "valid", "test"), names):
        (d / name).write_text(SPLITS[split])


@pytest.mark.parametrize("names,kind", [
    (("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"), "ptb"),
    (("train.txt", "valid.txt", "test.txt"), "ptb"),
    (("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"), "wikitext2"),
])
def test_loads_the_standard_files(tmp_path, names, kind):
    write(tmp_path, names)
    for name in ("auto", kind):
        c = load_corpus(tmp_path, name)
        # vocabulary in order of first appearance over train, valid, test; every line ends with <eos>
        assert c.vocab == ["the", "cat", "sat", "<eos>", "dog", "a", "bird"]
        assert c.train.tolist() == [0, 1, 2, 3, 3, 0, 4, 3]  # the blank line is a lone <eos>
        assert c.valid.tolist() == [5, 1, 3] and c.test.tolist() == [0, 6, 2, 3]
        assert c.train.dtype == torch.int64 and len(c) == 7


def test_missing_file_is_named(tmp_path):
    (tmp_path / "ptb.train.txt").write_text("a b\n")
    (tmp_path / "ptb.test.txt").write_text("a b\n")
    with pytest.raises(FileNotFoundError, match=r"has no ptb\.valid\.txt \(expected"):
        load_corpus(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"wiki\.train\.tokens, wiki\.valid\.tokens, wiki\.test\.tokens"):
        load_corpus(tmp_path, "wikitext2")
    with pytest.raises(NotADirectoryError, match="data_dir"):
        load_corpus(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="name must be"):
        load_corpus(tmp_path, "ptb2")


def test_empty_file_is_refused(tmp_path):
    write(tmp_path, ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"))
    (tmp_path / "ptb.valid.txt").write_text("\n\n")
    with pytest.raises(ValueError, match=r"ptb\.valid\.txt holds no words"):
        load_corpus(tmp_path)


def test_tiny_corpus_is_deterministic_and_structured():
    a, b = tiny_corpus((50, 10, 10), seed=3), tiny_corpus((50, 10, 10), seed=3)
    assert torch.equal(a.train, b.train) and a.vocab == b.vocab
    assert not torch.equal(tiny_corpus((50, 10, 10), seed=4).train[:50], a.train[:50])
    words = [a.vocab[i] for i in a.train.tolist()]
    sentences = " ".join(words).split(" <eos>")[:-1]
    assert len(sentences) == 50 and all(s.strip().startswith("the ") and s.endswith(" .") for s in sentences)
    with pytest.raises(ValueError, match="lines"):
        tiny_corpus((10, 0, 10))


def test_batchify_and_get_batch():
    data = torch.arange(23)
    src = batchify(data, 4)  # 5 rows, 3 tokens dropped
    assert src.shape == (5, 4) and src[:, 1].tolist() == [5, 6, 7, 8, 9]
    x, y = get_batch(src, 0, 3)
    assert x.shape == (3, 4) and torch.equal(y, src[1:4].reshape(-1))
    x, y = get_batch(src, 3, 3)  # the last window is shorter
    assert x.shape == (1, 4) and torch.equal(y, src[4])
    with pytest.raises(ValueError, match="batch_size"):
        batchify(data, 0)
    with pytest.raises(ValueError, match="too short"):
        batchify(torch.arange(5), 4)
    with pytest.raises(ValueError, match="no window"):
        get_batch(src, 4, 3)


def test_lines_break_at_newlines_only_as_pytorchs_example(tmp_path):
    """PyTorch's word_language_model example iterates the file: a line ends at a newline only.
    str.splitlines also broke at \\x0c, \\x85, \\u2028 (...), which added <eos> tokens there."""
    text = " the cat sat\n on the\u2028mat \x0c here\r\n a b\x85c\n"
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.txt").write_text(text, encoding="utf-8", newline="")
    c = load_corpus(tmp_path)
    ids, vocab = [], {}
    with open(tmp_path / "train.txt", encoding="utf8") as f:  # the example's reading, written out
        for line in f:
            for w in line.split() + ["<eos>"]:
                ids.append(vocab.setdefault(w, len(vocab)))
    assert [c.vocab[i] for i in c.train.tolist()] == [list(vocab)[i] for i in ids]
    assert c.train.tolist().count(c.vocab.index("<eos>")) == 3
