"""Log-log plot of the scale benchmark: seconds and peak memory of each stage
against the training documents, ours beside Annif 1.4.3's where it ran, and
each stage extrapolated to a million and ten million documents.

    python benchmarks/plot_scale.py [--tag final] [--out docs/guides/scale-growth.svg]

Reads benchmarks/results/scale_stages-SIZE-TAG.json (from scale_stages.py) and
scale_annif-SIZE.json (from scale_annif.py) for the sizes S, M, L and XL; a stage
is drawn where it was measured at two sizes or more. Writes one SVG with two
panels (time, memory), without fonts or scripts from the network, and prints
the extrapolation: each stage's time and memory grown from its largest
measured size with the exponent between its two largest sizes (time or
memory ~ documents^exponent; the concepts grow along with the documents in
the benchmark, so the exponent carries both).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale_stages  # noqa: E402
from common import RESULTS, ROOT, markdown_table  # noqa: E402

SIZES = scale_stages.MEASURED_SIZES
STAGES = {  # stage -> what the plot calls it
    "load-vocab": "load-vocab",
    "train-tfidf": "train tfidf",
    "train-xmc": "train xmc",
    "train-lexical": "train lexical",
    "eval-tfidf": "eval tfidf",
    "suggest-tfidf": "cold suggest tfidf",
}


def load_result(prefix: str, size: str, tag: str = "") -> dict | None:
    """A results file of `prefix` (scale_stages, scale_annif) for one size."""
    path = RESULTS / f"{prefix}-{size}{f'-{tag}' if tag else ''}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def measured(prefix: str, tag: str = "") -> dict[str, list[tuple[int, float, float]]]:
    """stage -> [(documents, seconds, peak MB)] over the sizes measured."""
    series: dict[str, list] = {}
    for size in SIZES:
        result = load_result(prefix, size, tag)
        for row in result["rows"] if result else ():
            if row["stage"] in STAGES and row.get("seconds"):
                point = (result["documents"], row["seconds"], row["peak_mb"])
                series.setdefault(row["stage"], []).append(point)
    return {stage: points for stage, points in series.items() if len(points) > 1}


def rows_by_stage(prefix: str, size: str, tag: str = "") -> dict[str, dict]:
    result = load_result(prefix, size, tag)
    return {r["stage"]: r for r in result["rows"]} if result else {}


def _cell(row: dict | None) -> str:
    """`seconds / peak MB (model MB)`, and the whole process tree's peak where
    it is well above the largest process's (Annif's mllm workers)."""
    if not row:
        return ""
    text = f"{row['seconds']:,} / {row['peak_mb']:,}"
    if row.get("model_mb"):
        text += f" ({row['model_mb']:,})"
    if row.get("tree_peak_mb", 0) > 1.2 * row["peak_mb"]:
        text += f", all processes {row['tree_peak_mb']:,}"
    return text


def side_by_side(tag: str) -> str:
    """Markdown: each stage at each size, ours beside Annif's."""
    ours = {size: rows_by_stage("scale_stages", size, tag) for size in SIZES}
    annif = {size: rows_by_stage("scale_annif", size) for size in SIZES}
    header = " | ".join(f"{size} ours | {size} Annif" for size in SIZES)
    lines = [f"| stage | {header} |", "|---" * (1 + 2 * len(SIZES)) + "|"]
    for stage in scale_stages.STAGES:
        cells = [_cell(d[size].get(stage)) for size in SIZES for d in (ours, annif)]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines += ["", f"| F1@5 | {header} |", "|---" * (1 + 2 * len(SIZES)) + "|"]
    for stage in ("eval-tfidf", "eval-xmc", "eval-lexical"):
        cells = [
            f"{d[size][stage]['F1@5']:.3f}" if stage in d[size] else ""
            for size in SIZES
            for d in (ours, annif)
        ]
        lines.append(f"| {stage[5:]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def exponent(a: tuple, b: tuple, column: int) -> float:
    """Growth exponent of `column` (1: seconds, 2: MB) from point a to b."""
    return math.log(b[column] / a[column]) / math.log(b[0] / a[0])


def extrapolate(series: dict, documents: int) -> list[dict]:
    """Each stage at `documents`, from its two largest measured sizes (not
    load-vocab: it grows with the concepts, not the documents)."""
    rows = []
    for stage, points in series.items():
        if stage == "load-vocab":
            continue
        a, b = sorted(points)[-2:]
        time_exp, memory_exp = exponent(a, b, 1), exponent(a, b, 2)
        factor = documents / b[0]
        rows.append(
            {
                "stage": stage,
                "from": f"{a[0]:,} -> {b[0]:,}",
                "time exponent": round(time_exp, 2),
                "memory exponent": round(memory_exp, 2),
                "hours": round(b[1] * factor ** max(time_exp, 0) / 3600, 2),
                "GB": round(b[2] * factor ** max(memory_exp, 0) / 1000, 1),
            }
        )
    return rows


def plot(ours: dict, annif: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"  # text stays text, no embedded fonts
    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(11, 5.2))
    colours = dict(zip(STAGES, plt.cm.tab10.colors, strict=False))
    for series, style, who in ((ours, "-o", "indexer"), (annif, "--s", "Annif")):
        for stage, points in sorted(series.items()):
            docs = [p[0] for p in points]
            label = f"{STAGES[stage]} ({who})"
            colour = colours[stage]
            time_axis.plot(
                docs, [p[1] for p in points], style, color=colour, label=label
            )
            memory_axis.plot(docs, [p[2] for p in points], style, color=colour)
    for axis, title in ((time_axis, "seconds"), (memory_axis, "peak memory, MB")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("training documents (with 20k, 100k, 200k concepts)")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    handles, labels = time_axis.get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    figure.tight_layout(rect=(0, 0.14, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, format="svg", metadata={"Date": None})
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tag", default="final", help="scale_stages results tag")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "guides" / "scale-growth.svg"
    )
    args = parser.parse_args()
    ours, annif = measured("scale_stages", args.tag), measured("scale_annif")
    if not ours:
        raise SystemExit(f"no scale_stages results with tag '{args.tag}' in {RESULTS}")
    plot(ours, annif, args.out)
    print(f"wrote {args.out} ({len(ours)} stages of ours, {len(annif)} of Annif)")
    print("\n## Seconds / peak MB (model MB), ours beside Annif's\n")
    print(side_by_side(args.tag))
    columns = ["stage", "from", "time exponent", "memory exponent", "hours", "GB"]
    for documents in (1_000_000, 10_000_000):
        for who, series in (("indexer", ours), ("Annif", annif)):
            if series:
                print(f"\n## {who} at {documents:,} documents\n")
                print(markdown_table(extrapolate(series, documents), columns))


if __name__ == "__main__":
    main()
