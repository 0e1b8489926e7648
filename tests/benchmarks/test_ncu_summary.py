"""benchmarks/ncu_summary.py: Nsight Compute's CSV (--csv --page details) grouped by kernel launch
into markdown, the profiler's and the program's own lines before the header skipped."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import ncu_summary  # noqa: E402

HEAD = ('"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size",'
        '"Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"')
FWD = "void sparse_engine::cuda::(anonymous namespace)::seq_forward_kernel<float, (sparse_engine::CellMode)0>(" \
      "sparse_engine::cuda::(anonymous namespace)::SeqArgs<float>)"


def row(launch, kernel, section, metric, unit, value):
    return (f'"{launch}","7","python3","h","{kernel}","1","7","(256, 1, 1)","(264, 1, 1)","0","9.0",'
            f'"{section}","{metric}","{unit}","{value}"')


def csv_text():
    return "\n".join([
        "==PROF== Connected to process 7",
        "LSTM 4,096 @ 0.01, persistent: 5.1 ms",  # the profiled program's own output
        HEAD,
        row(0, FWD, "GPU Speed Of Light Throughput", "Duration", "us", "1,023.5"),
        row(0, FWD, "Occupancy", "Achieved Occupancy", "%", "24.8"),
        row(1, "void k2<double>(int)", "GPU Speed Of Light Throughput", "Duration", "us", "88.0"),
        row(0, FWD, "GPU Speed Of Light Throughput", "L2 Cache Throughput", "%", "61.2"),
        "==PROF== Disconnected from process 7",
    ])


def test_rows_are_grouped_by_launch_in_the_order_profiled():
    found = ncu_summary.launches(csv_text())
    assert [launch["id"] for launch in found] == ["0", "1"]
    assert found[0]["grid"] == "(264, 1, 1)" and found[0]["block"] == "(256, 1, 1)"
    assert found[0]["metrics"] == [("GPU Speed Of Light Throughput", "Duration", "us", "1,023.5"),
                                   ("Occupancy", "Achieved Occupancy", "%", "24.8"),
                                   ("GPU Speed Of Light Throughput", "L2 Cache Throughput", "%", "61.2")]
    assert found[1]["metrics"] == [("GPU Speed Of Light Throughput", "Duration", "us", "88.0")]


def test_kernel_names_lose_namespaces_and_arguments():
    assert ncu_summary.short_name(FWD) == "seq_forward_kernel<float, (CellMode)0>"
    assert ncu_summary.short_name("void k2<double>(int)") == "k2<double>"


def test_markdown_has_a_table_per_launch(tmp_path):
    src, md = tmp_path / "ncu.csv", tmp_path / "ncu.md"
    src.write_text(csv_text())
    assert ncu_summary.main([str(src), "--md", str(md), "--title", "T"]) == 0
    text = md.read_text()
    assert text.startswith("# T\n")
    assert "## launch 0: `seq_forward_kernel<float, (CellMode)0>`, grid (264, 1, 1), block (256, 1, 1)" in text
    assert "| Occupancy | Achieved Occupancy | % | 24.8 |" in text
    assert text.count("| section | metric | unit | value |") == 2


def test_input_without_a_csv_header_is_one_clear_error(tmp_path, capsys):
    src = tmp_path / "ncu.csv"
    src.write_text("==ERROR== the profiler could not attach\n")
    assert ncu_summary.main([str(src), "--md", str(tmp_path / "x.md")]) == 1
    assert "no ncu CSV header" in capsys.readouterr().err
    with pytest.raises(ValueError, match="lacks the columns"):
        ncu_summary.launches('"ID","Kernel Name"\n"0","k"\n')
