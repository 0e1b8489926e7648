"""Each line on the terminal is there for a reason: ``bench`` without torch.sparse's notices about
itself, ``train`` into a log file without a progress bar's carriage returns, ``analyze --null``
with one 'not tested' line for the measures the graph does not define (no NaN rows, no warnings)."""
import warnings

from sparse_engine import cli


def test_bench_prints_no_torch_sparse_notices(tmp_path, run_cli):
    code, out, err = run_cli("bench", "--n", "300", "--density", "0.05", "--batch", "4", cwd=tmp_path)
    assert code == 0 and "spmm" in out and "sddmm" in out
    assert err == "", err  # torch.sparse says 'beta state' and 'invariant checks' once per process otherwise


def test_bench_silences_only_those_notices():
    from sparse_engine.runs.bench_run import torch_sparse_notices_silenced

    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        with torch_sparse_notices_silenced():
            warnings.warn("Sparse CSR tensor support is in beta state. If you miss ...", UserWarning)
            warnings.warn("Sparse invariant checks are implicitly disabled. Memory errors ...", UserWarning)
            warnings.warn("something else", UserWarning)
            warnings.warn("Sparse CSR tensor support is in beta state", DeprecationWarning)
    assert [(str(w.message), w.category) for w in said] == [
        ("something else", UserWarning), ("Sparse CSR tensor support is in beta state", DeprecationWarning)]


def test_train_into_a_log_file_has_plain_lines(tmp_path, run_cli):
    """stdout and stderr not a terminal: no progress bar (no carriage return, no escape code), one
    line per epoch."""
    code, out, err = run_cli("train", "--task", "mackey-glass", "--model", "rnn", "--hidden", "8",
                                   "--epochs", "2", "--save", "ck.pt", cwd=tmp_path)
    assert code == 0, err
    assert "\r" not in out + err and "\x1b" not in out + err
    memory, *lines = out.splitlines()  # the memory plan's one line before the run (docs/memory.md)
    assert memory.startswith("memory: estimated peak ") and memory.endswith("(the memory available now)")
    assert lines[0] == "sparse RNN on mackey-glass (none, cpu)" and lines[1].split()[0] == "epoch"
    assert [line.split()[0] for line in lines[2:4]] == ["1", "2"] and lines[4] == "checkpoint: ck.pt"
    assert err == ""


def test_analyze_null_models_say_what_they_did_not_test(tmp_path, capsys):
    """A graph without mutual edges has no 120D, 120U or 300 triad (each needs a mutual dyad): their
    balance is not tested, said in one line; the 030T rows are there; no NaN and no warning."""
    edges = [(0, 1, 0.5), (1, 2, -0.5), (0, 2, 0.25), (2, 3, 1.0), (3, 4, -1.0), (2, 4, 0.5), (4, 5, 0.3)]
    path = tmp_path / "edges.csv"
    path.write_text("Id,Source,Target,Weight\n" + "".join(f"{i},{s},{t},{w}\n" for i, (s, t, w) in enumerate(edges)))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert cli.main(["analyze", str(path), "--null", "5"]) == 0
    assert not said, [str(w.message) for w in said]
    out = capsys.readouterr().out
    assert "nan" not in out.lower()
    assert "balance_semicycle_030T" in out and "balance_triad_030T" in out
    untested = [line for line in out.splitlines() if line.startswith("not tested: ")]
    assert untested == ["not tested: balance_*_120D (no 120D triad in the graph), balance_*_120U (no 120U triad in "
                        "the graph), balance_*_300 (no 300 triad in the graph)"], untested
    assert "balance_semicycle_300" not in out and "balance_triad_120U" not in out
