"""The report's plots as inline SVG strings (matplotlib, imported lazily)."""

from __future__ import annotations

import io
import re

from indexer.errors import DependencyError

COLOURS = {"precision": "#1f77b4", "recall": "#2ca02c", "f1": "#d62728"}
SIZE = (5.6, 3.3)


def require_matplotlib() -> None:
    """Raise the error naming the extra when matplotlib is not installed."""
    _matplotlib()


def _matplotlib():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise DependencyError(
            "An HTML report needs matplotlib: pip install 'subject-indexer[report]' "
            "(or write the report's data with --report FILE.json)"
        ) from None
    return Figure


def _svg(fig, name: str) -> str:
    """The figure as an <svg> element to inline: no XML prologue, no DOCTYPE
    or metadata (they name external URLs), ids unique to this figure."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    return svg.replace("<svg ", f'<svg role="img" aria-label="{name}" ', 1)


def _figure():
    fig = _matplotlib()(figsize=SIZE)
    ax = fig.add_subplot()
    ax.grid(True, alpha=0.3)
    ax.set_ylim(0, 1.02)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig, ax


def prf_curve(points: list[dict], x: str, chosen: float, label: str) -> str:
    """Precision, recall and F1 against `x` (limit or threshold), the
    project's operating point marked by a dashed line and a dot on F1."""
    fig, ax = _figure()
    xs = [p[x] for p in points]
    for metric, colour in COLOURS.items():
        ax.plot(
            xs,
            [p[metric] for p in points],
            color=colour,
            marker="o",
            markersize=3,
            label=metric.capitalize() if metric != "f1" else "F1",
        )
    ax.axvline(chosen, color="#555", linestyle="--", linewidth=1)
    at = min(points, key=lambda p: abs(p[x] - chosen))
    ax.plot([at[x]], [at["f1"]], "o", color=COLOURS["f1"], markersize=9, alpha=0.5)
    ax.annotate(
        f"project: {label} (F1 {at['f1']:.3f})",
        (chosen, 0.03),
        xytext=(4, 0),
        textcoords="offset points",
        fontsize=8,
        backgroundcolor="white",
    )
    if x == "limit":
        ax.set_xticks(range(0, xs[-1] + 1, 2))
    ax.set_xlabel(x)
    ax.set_ylabel("document average")
    ax.legend(fontsize=8, loc="best", framealpha=0.9)
    return _svg(fig, f"precision, recall and F1 against the {x}")


def seen_unseen(data: dict) -> str:
    """Recall@k of gold subjects seen in training and of unseen ones."""
    fig, ax = _figure()
    for name, colour in (("seen", "#1f77b4"), ("unseen", "#ff7f0e")):
        points = [p for p in data[name] if p["recall"] is not None]
        if not points:
            continue
        total = data[f"gold_{name}"]
        ax.plot(
            [p["k"] for p in points],
            [p["recall"] for p in points],
            color=colour,
            marker="o",
            markersize=3,
            label=f"{name} in training ({total} gold)",
        )
    ax.set_xticks(range(0, len(data["seen"]) + 1, 2))
    ax.set_xlabel("k (suggestions per document)")
    ax.set_ylabel("recall@k (micro)")
    if ax.get_lines():  # none when no document has gold subjects
        ax.legend(fontsize=8, loc="lower right")
    return _svg(fig, "recall at k of seen and unseen subjects")


def reliability(data: dict) -> str:
    """Share of suggestions that are correct per score bin, against the
    diagonal of perfect calibration, with the count of each bin."""
    fig, ax = _figure()
    ax.plot([0, 1], [0, 1], color="#999", linestyle=":", label="perfectly calibrated")
    bins = [b for b in data["bins"] if b["count"]]
    ax.bar(
        [(b["low"] + b["high"]) / 2 for b in bins],
        [b["share_correct"] for b in bins],
        width=0.09,
        color="#1f77b4",
        alpha=0.75,
        label="share correct",
    )
    ax.plot(
        [b["mean_score"] for b in bins],
        [b["share_correct"] for b in bins],
        "o",
        color="#d62728",
        markersize=4,
        label="at the bin's mean score",
    )
    for b in bins:
        ax.annotate(
            str(b["count"]),
            ((b["low"] + b["high"]) / 2, b["share_correct"]),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            fontsize=7,
        )
    ax.set_xlim(0, 1)
    ax.set_xlabel("predicted score")
    ax.set_ylabel("observed share correct")
    ax.legend(fontsize=8, loc="upper left")
    return _svg(fig, "reliability diagram")


def sources(rows: list[dict], metric: str) -> str:
    """Each source's `metric` beside the fusion's (red), on the same documents."""
    fig, ax = _figure()
    rows = rows[::-1]  # barh draws bottom up: the fusion, first, on top
    positions = range(len(rows))
    ax.barh(
        positions,
        [r[metric] for r in rows],
        color=["#d62728" if r.get("fusion") else "#1f77b4" for r in rows],
        height=0.6,
    )
    for i, r in enumerate(rows):
        ax.annotate(
            f"{r[metric]:.3f}",
            (r[metric], i),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    ax.set_yticks(list(positions), [r["project"] for r in rows])
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlim(0, 1.05)
    ax.grid(True, axis="x", alpha=0.3)
    ax.grid(False, axis="y")
    ax.set_xlabel(metric)
    return _svg(fig, f"{metric} of each source and of the fusion")
