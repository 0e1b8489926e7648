"""Nsight Compute's CSV (``ncu --csv --page details``) as a markdown file: one table per profiled
kernel launch (its section, metric, unit and value), with the launch's grid and block, so that a
GPU session's profile of a kernel can be read and committed beside the benchmark tables. Lines
before the CSV header (``==PROF==`` messages, the profiled program's own output) are skipped.

    ncu --csv --page details -k regex:seq_ --launch-count 2 --section SpeedOfLight ... \\
        --log-file ncu.csv python benchmarks/profile_rnn_step.py --plain ...
    python benchmarks/ncu_summary.py ncu.csv --md ncu_persistent.md --title "..."
"""
from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path

KEY_COLUMNS = ("ID", "Kernel Name", "Section Name", "Metric Name", "Metric Unit", "Metric Value")


def launches(text: str) -> list[dict]:
    """[{"id", "kernel", "grid", "block", "metrics": [(section, name, unit, value)]}] in the order
    profiled; ValueError when the text holds no ncu CSV header."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID",')), None)
    if start is None:
        raise ValueError("no ncu CSV header (a line starting with \"ID\",) in the input")
    rows = list(csv.DictReader([line for line in lines[start:] if line.startswith('"')]))
    missing = [c for c in KEY_COLUMNS if c not in (rows[0] if rows else {})]
    if rows and missing:
        raise ValueError(f"the ncu CSV lacks the columns {', '.join(missing)}")
    out: dict[str, dict] = {}
    for row in rows:
        if not row.get("ID"):
            continue
        launch = out.setdefault(row["ID"], {"id": row["ID"], "kernel": row["Kernel Name"],
                                            "grid": row.get("Grid Size", ""), "block": row.get("Block Size", ""),
                                            "metrics": []})
        launch["metrics"].append((row["Section Name"], row["Metric Name"], row["Metric Unit"], row["Metric Value"]))
    return list(out.values())


def short_name(kernel: str) -> str:
    """A demangled kernel name without its namespaces and argument list: 'seq_forward_kernel<float, LSTM>'."""
    name = kernel.replace("(anonymous namespace)::", "").strip()
    if name.endswith(")"):  # drop the argument list: from the "(" that matches the last ")"
        depth = 0
        for i in range(len(name) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(name[i], 0)
            if depth == 0:
                name = name[:i]
                break
    name = re.sub(r"\b(?:[A-Za-z_]\w*::)+", "", name)
    return re.sub(r"^void\s+", "", name).strip()


def markdown(title: str, found: list[dict]) -> str:
    parts = [f"# {title}", ""]
    for launch in found:
        grid = f", grid {launch['grid']}, block {launch['block']}" if launch["grid"] else ""
        parts += [f"## launch {launch['id']}: `{short_name(launch['kernel'])}`{grid}", "",
                  "| section | metric | unit | value |", "| --- | --- | --- | --- |"]
        parts += [f"| {s} | {n} | {u} | {v} |" for s, n, u, v in launch["metrics"]]
        parts.append("")
    return "\n".join(parts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv", type=Path, help="ncu's CSV output (--csv --page details, e.g. its --log-file)")
    p.add_argument("--md", type=Path, required=True, help="the markdown file to write")
    p.add_argument("--title", default="Nsight Compute profile")
    args = p.parse_args(argv)
    try:
        found = launches(args.csv.read_text(errors="replace"))
    except (OSError, ValueError) as e:
        print(f"ncu_summary: {args.csv}: {e}", file=sys.stderr)
        return 1
    args.md.write_text(markdown(args.title, found) + "\n")
    print(f"ncu_summary: {len(found)} launches -> {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
