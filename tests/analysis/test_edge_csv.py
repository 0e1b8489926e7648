"""Reading Gephi edge lists: node ids relabelled compactly when they are far apart (a huge id must
not allocate a huge matrix), the shipped networks read exactly as before, and empty or malformed
files fail with the file and line named."""
import time
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

import sparse_engine  # noqa: F401
from sparse_engine.analysis import read_edge_csv, signed_triad_census, write_edge_csv
from sparse_engine.runs import analyze


def write(tmp_path, text, name="e.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_huge_node_id_is_relabelled_without_allocating(tmp_path):
    big = 10**12
    p = write(tmp_path, f"Id,Source,Target,Weight\n0,0,1,0.5\n1,1,{big},-0.25\n2,{big},0,2.0\n3,1,0,1.5\n")
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        W, ids = read_edge_csv(p, return_ids=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 5.0 and peak < 16 * 2**20
    assert W.shape == (3, 3) and ids.tolist() == [0, 1, big]  # node k is the k-th smallest id
    assert W[1, 0] == 0.5 and W[2, 1] == -0.25 and W[0, 2] == 2.0 and W[0, 1] == 1.5
    assert signed_triad_census(W).counts["120C"] == 1  # 0 <-> 1, 1 -> big -> 0
    # export writes the original ids back
    out = tmp_path / "back.csv"
    write_edge_csv(W, out, ids=ids)
    W2, ids2 = read_edge_csv(out, return_ids=True)
    assert ids2.tolist() == ids.tolist() and (W2 != W).nnz == 0
    # the command line's analyze reads it and round-trips the ids on export
    res = analyze(path=str(p), export_csv=str(tmp_path / "exp.csv"))
    assert set(res) == {"semicycle", "triad", "weighted"}
    assert str(big) in (tmp_path / "exp.csv").read_text()
    # with n given, ids are unit numbers and must fit
    with pytest.raises(ValueError, match="n=5"):
        read_edge_csv(p, n=5)


def test_id_rules(tmp_path):
    # ids 0..k-1 with a few absent below the largest: kept as they are (isolated units stay nodes)
    p = write(tmp_path, "Source,Target,Weight\n0,3,1.0\n3,0,-1.0\n")
    W, ids = read_edge_csv(p, return_ids=True)
    assert W.shape == (4, 4) and ids.tolist() == [0, 1, 2, 3]
    # far apart: relabelled
    p = write(tmp_path, "Source,Target,Weight\n10,300,1.0\n300,10,-1.0\n")
    W, ids = read_edge_csv(p, return_ids=True)
    assert W.shape == (2, 2) and ids.tolist() == [10, 300] and W[1, 0] == 1.0 and W[0, 1] == -1.0
    # n given: ids used as unit numbers
    assert read_edge_csv(p, n=301).shape == (301, 301)
    # Gephi's other columns and a byte-order mark are fine, and float-written integer ids
    p = write(tmp_path, "\ufeffSource,Target,Type,Id,Label,Weight\n0.0,1,Directed,0,,0.5\n1,0,Directed,1,,-2\n")
    W = read_edge_csv(p)
    assert W.shape == (2, 2) and W[1, 0] == 0.5 and W[0, 1] == -2.0


def test_shipped_networks_read_exactly_as_before(shared_data):
    """Ids used as they are, n = largest id + 1 (two person-activity networks have isolated units
    below the largest id: they stay nodes), so every census and balance value is unchanged."""
    files = sorted(shared_data("sparse_rnns_networks").glob("*.csv"))
    assert len(files) >= 40
    for path in files:
        d = np.loadtxt(path, delimiter=",", skiprows=1, usecols=(1, 2, 3), ndmin=2)
        src, dst = d[:, 0].astype(np.int64), d[:, 1].astype(np.int64)
        n = int(max(src.max(), dst.max())) + 1
        old = sp.csr_matrix((d[:, 2], (dst, src)), shape=(n, n))
        new, ids = read_edge_csv(path, return_ids=True)
        assert new.shape == old.shape and (new != old).nnz == 0, path.name
        assert ids.tolist() == list(range(n))


@pytest.mark.parametrize("text,match", [
    ("", "empty"),
    ("\n\n", "empty"),
    ("Id,Source,Target,Weight\n", "no edges"),
    ("Id,Source,Target\n0,1,2\n", "Weight"),
    ("Id,Source,Target,Weight\n0,0,1,0.5\n1,a,2,0.3\n", "line 3.*Source 'a'"),
    ("Id,Source,Target,Weight\n0,0,1,0.5\n1,1,-2,0.3\n", "line 3.*Target '-2'"),
    ("Id,Source,Target,Weight\n0,0,1,0.5\n1,1,2\n", "line 3.*4 columns"),
    ("Id,Source,Target,Weight\n0,0,1,x\n", "line 2.*Weight 'x'"),
    ("Id,Source,Target,Weight\n0,0,1,nan\n", "line 2.*Weight 'nan'"),
    ("Id,Source,Target,Weight\n0,0,1.5,1\n", "line 2.*Target '1.5'"),
    ("Id,Source,Target,Weight\n0,0,99999999999999999999999,1\n", "line 2.*Target"),
])
def test_empty_and_malformed_edge_lists(tmp_path, text, match):
    p = write(tmp_path, text, "bad.csv")
    with pytest.raises(ValueError, match=match) as e:
        read_edge_csv(p)
    assert "bad.csv" in str(e.value)
    with pytest.raises(ValueError, match="bad.csv"):
        analyze(path=str(p))


def test_header_only_with_n_is_an_empty_graph(tmp_path):
    p = write(tmp_path, "Id,Source,Target,Weight\n")
    assert read_edge_csv(p, n=4).nnz == 0


def test_an_edge_given_twice_is_refused_with_both_lines(tmp_path):
    """Summed, the rows 0 -> 1 = 0.5 and 0 -> 1 = -0.3 read as +0.2 and flipped the loop's balance
    (the paper's code, through networkx, keeps the last row): the file is refused instead, naming
    the edge and both its lines; the first repeat in the file is the one named."""
    from sparse_engine.analysis import read_edge_csv

    path = tmp_path / "dup.csv"
    path.write_text("Id,Source,Target,Weight\n0,0,1,0.5\n1,1,2,1.0\n2,2,1,1.0\n3,1,2,-2\n4,0,1,-0.3\n5,1,2,3\n")
    with pytest.raises(ValueError, match=r"dup.csv, line 5: the edge 1 -> 2 is given again \(first at line 3\)"):
        read_edge_csv(path)
    path.write_text("Id,Source,Target,Weight\n0,0,1,0.5\n1,1,0,1.0\n2,1,1,1.0\n")  # both directions, a loop
    assert read_edge_csv(path).nnz == 3
