"""Subjects never seen in training: every backend and ensemble, one table per
dataset, with recall@10 over the gold subjects absent from the training data.

    python benchmarks/unseen.py [--datasets kirjastonhoitaja,gnd-tibkat-en,
        ykl-makupalat] [--sources tfidf,lexical,xmc] [--zero-shot lexical]

Protocol (the evaluation split is never used for fitting):

- kirjastonhoitaja and ykl-makupalat: train -> validate; gnd-tibkat-en:
  train-en split 80/10/10 by the md5 of each line.
- 15% of train is held out: the sources are trained on the rest, the
  calibrated fusion is fitted on the held-out part, then the sources are
  retrained on all training data and every row is evaluated with those models.
- `zero-shot` is an equal-weight ensemble of the sources named by
  `--zero-shot` (backends that need no indexed documents).

Prints one markdown table per dataset; writes benchmarks/results/unseen.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    Timer,
    evaluated_row,
    markdown_table,
    save_results,
    training_counts,
    write_config,
)
from ensembles import EXTRA, splits, work_directory  # noqa: E402

from indexer.project import Projects  # noqa: E402

COLUMNS = [
    "backend",
    "f1@5",
    "ndcg",
    "recall@10",
    "unseen_recall@10",
    "unseen_gold",
    "ms/doc",
]


def settings_for(name: str, language: str, sources: list[str], zero_shot: list[str]):
    settings = {
        source: {
            "language": language,
            "backend": source,
            **EXTRA.get(name, {}).get(source, {}),
        }
        for source in sources
    }
    settings["zero-shot"] = {
        "language": language,
        "backend": "ensemble",
        "sources": ", ".join(f"{s}:1" for s in zero_shot),
    }
    settings["calibrated"] = {
        "language": language,
        "backend": "calibrated",
        "sources": ", ".join(sources),
    }
    return settings


def bench(name: str, sources: list[str], zero_shot: list[str]) -> tuple[list, dict]:
    workdir = work_directory(f"unseen-{name}")
    paths = splits(name, workdir)
    cfg = write_config(
        workdir,
        "vocab",
        paths["vocab"],
        settings_for(name, paths["language"], sources, zero_shot),
    )
    projects = Projects.from_path(cfg)
    info: dict = {"train_s": {}}
    for source in sources:
        projects.get(source).train(paths["train"], jobs=2)
    with Timer() as t:
        projects.get("calibrated").train([paths["tune"]])
    info["fusion_s"] = round(t.seconds, 1)
    for source in sources:
        with Timer() as t:
            projects.get(source).train(paths["full"], jobs=2)
        info["train_s"][source] = round(t.seconds, 1)
        print(f"{name}: trained {source} in {t.seconds:.1f} s", flush=True)
    seen = sum(training_counts(projects.get(sources[0]), p) for p in paths["full"])
    rows = []
    for project_id in [*sources, "zero-shot", "calibrated"]:
        project = projects.get(project_id)
        project.unload()  # load the final models
        rows.append(evaluated_row(name, project_id, project, paths["test"], seen))
        print({k: v for k, v in rows[-1].items() if k in COLUMNS}, flush=True)
    return rows, info


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--datasets", default="kirjastonhoitaja,gnd-tibkat-en,ykl-makupalat"
    )
    parser.add_argument("--sources", default="tfidf,lexical,xmc")
    parser.add_argument("--zero-shot", default="lexical")
    args = parser.parse_args()
    sources = args.sources.split(",")
    zero_shot = args.zero_shot.split(",")
    results = {}
    for name in args.datasets.split(","):
        rows, info = bench(name, sources, zero_shot)
        results[name] = {"rows": rows, "info": info}
        print(f"\n### {name}\n\n{markdown_table(rows, COLUMNS)}\n", flush=True)
    save_results("unseen", results)


if __name__ == "__main__":
    main()
