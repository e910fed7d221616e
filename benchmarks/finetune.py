"""embed before and after contrastive fine-tuning of its encoder.

    python benchmarks/finetune.py [--dataset kirjastonhoitaja] [--epochs 2]
        [--documents 1000] [--length 128] [--calibration-docs 500]

Trains `embed` (calibration only) and `embed` with `finetune = EPOCHS` on the
first DOCUMENTS training documents (all when 0), documents truncated to
LENGTH tokens while fine-tuning, and evaluates both on the evaluation split:
F1@5, nDCG@10, R@10 and unseen R@10 (gold subjects absent from the full
train.tsv). The work directory (embedding cache) persists in
benchmarks/results/work.
"""

from __future__ import annotations

import argparse
import itertools
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout
from common import (  # noqa: E402
    METRIC_COLUMNS,
    RESULTS,
    Timer,
    dataset_paths,
    evaluate,
    markdown_table,
    metric_row,
    save_results,
    training_counts,
    write_config,
)

from indexer.project import Projects  # noqa: E402


def head(source: Path, target: Path, documents: int) -> Path:
    with open(source, encoding="utf-8") as f:
        lines = f.readlines() if not documents else list(itertools.islice(f, documents))
    target.write_text("".join(lines), encoding="utf-8")
    return target


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="kirjastonhoitaja")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--calibration-docs", type=int, default=500)
    args = parser.parse_args()
    workdir = RESULTS / "work" / f"finetune-{args.dataset}"
    workdir.mkdir(parents=True, exist_ok=True)
    paths = dataset_paths(args.dataset, workdir)
    language = paths["language"]
    extra = {
        "model": "multilingual-e5-small",
        "calibration_docs": args.calibration_docs,
    }
    if args.dataset.startswith("gnd"):
        extra["label_language"] = "de"
    tuned = {
        "finetune": args.epochs,
        "finetune_length": args.length,
        "finetune_batch_size": args.batch_size,
    }
    settings = {
        "embed": {"language": language, "backend": "embed", **extra},
        "embed-finetuned": {
            "language": language,
            "backend": "embed",
            **extra,
            **tuned,
        },
    }
    projects = Projects.from_path(
        write_config(workdir, "vocab", paths["vocab"], settings)
    )
    seen = training_counts(projects.get("embed"), paths["train"])
    subset = head(paths["train"], workdir / "finetune-train.tsv", args.documents)
    rows, timings = [], {}
    for project_id in settings:
        project = projects.get(project_id)
        with Timer() as t:
            info = project.train([subset])
        metrics, seconds, documents = evaluate(project, paths["test"], seen)
        rows.append(metric_row(args.dataset, project_id, metrics, seconds, documents))
        timings[project_id] = {
            "train_s": round(t.seconds, 1),
            "finetuning": info.get("finetuning"),
            "unseen_gold": metrics.get("unseen_gold"),
        }
        print(rows[-1], timings[project_id], flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(markdown_table(rows, METRIC_COLUMNS))
    print(f"peak memory {peak:.0f} MB; {timings}")
    save_results(
        f"finetune-{args.dataset}",
        {"args": vars(args), "rows": rows, "timings": timings, "peak_mb": peak},
    )


if __name__ == "__main__":
    main()
