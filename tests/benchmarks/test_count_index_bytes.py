"""benchmarks/count_index_bytes.py (issue 46's compact index, counted): each encoding's bytes on a
small index counted by hand, the bound against math.comb, and the sampled count at the real
proportions against the expected number of (row, block) runs."""
import math

import torch


def test_index_bytes_counted_by_hand(load_script):
    count = load_script("benchmarks/count_index_bytes.py")
    n = 2**17 + 5  # three 65,536-wide blocks: 0, 1 and 2 (5 columns)
    # row 0: columns 0, 1, 70,000 (blocks 0, 0, 1: 2 runs); row 1: 131,072 (block 2: 1 run); row 2: empty
    row_ptr = torch.tensor([0, 3, 4, 4])
    idx = torch.tensor([0, 1, 70000, 131072], dtype=torch.int32)
    got = count.index_bytes(row_ptr, idx, n)
    assert got["runs"] == 3
    assert got["int32"] == 16
    assert got["blocks16"] == 2 * 4 + 2 * 3
    assert got["packed"] == 3 * 4  # n - 1 = 131,076 takes 18 bits: 3 bytes
    bits = math.log2(math.comb(n, 3)) + math.log2(math.comb(n, 1)) + math.log2(math.comb(n, 0))
    assert math.isclose(got["entropy"], bits / 8, rel_tol=1e-9)
    assert count.index_bytes(torch.tensor([0, 2]), torch.tensor([0, 255], dtype=torch.int32), 256)["packed"] == 2


def test_place_bytes(load_script):
    count = load_script("benchmarks/count_index_bytes.py")
    assert [count.place_bytes(n) for n in (1, 256, 257, 65536, 65537)] == [1, 1, 2, 2, 4]


def test_sampled_runs_match_their_expectation(load_script):
    count = load_script("benchmarks/count_index_bytes.py")
    # k = 32 of n columns in blocks of 65,536: E[runs a row] = blocks x (1 - (1 - 1/blocks)^32) for
    # uniformly random rows (a row's length varies around 32, which moves it by well under 1%)
    hidden, per_row = 2**20, 32
    got = count.count(hidden, 4, per_row, sample=4096, seed=0)
    for name, n, k in (("csr", hidden, per_row), ("transposed", 4 * hidden, 4 * per_row)):
        blocks = n / 65536
        runs = blocks * (1 - (1 - 1 / blocks) ** k)
        assert math.isclose(got[name]["blocks16"], 2 + 2 * runs / k, rel_tol=0.01)
        assert got[name]["int32"] == 4
    assert got["longest_row"] > per_row
