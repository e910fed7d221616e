"""Dense retrieval benchmark: knn and embed beside tfidf and lexical.

    python benchmarks/dense.py [--datasets archaeology,kirjastonhoitaja,gnd-tibkat-en]

Work directories (with the embedding cache) persist in benchmarks/results/work,
so a rerun does not re-embed. Prints a markdown table and speed figures.
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    METRIC_COLUMNS,
    RESULTS,
    Timer,
    dataset_paths,
    evaluated_row,
    markdown_table,
    save_results,
    training_counts,
    write_config,
)

from indexer.project import Projects  # noqa: E402

# GND labels are German only; documents are English: cross-lingual matching
EXTRA = {
    "gnd-tibkat-en": {
        "embed": {"label_language": "de", "model": "multilingual-e5-small"}
    }
}


def project_settings(name: str, language: str) -> dict[str, dict]:
    extra = EXTRA.get(name, {})
    return {
        "tfidf": {"language": language, "backend": "tfidf"},
        "lexical": {"language": language, "backend": "lexical"},
        "knn": {"language": language, "backend": "knn", **extra.get("knn", {})},
        "embed": {"language": language, "backend": "embed", **extra.get("embed", {})},
    }


def bench(name: str) -> tuple[list[dict], dict]:
    workdir = RESULTS / "work" / name
    workdir.mkdir(parents=True, exist_ok=True)
    paths = dataset_paths(name, workdir)
    settings = project_settings(name, paths["language"])
    projects = Projects.from_path(
        write_config(workdir, "vocab", paths["vocab"], settings)
    )
    seen = training_counts(projects.get("tfidf"), paths["train"])
    rows, speed = [], {}
    for project_id in settings:
        project = projects.get(project_id)
        if project_id == "embed":  # built (or read from the cache) on first use
            with Timer() as build:
                project.backend._ensure_loaded()
            speed["concept_index_s"] = round(build.seconds, 1)
        with Timer() as train:
            project.train([paths["train"]])
        rows.append(
            evaluated_row(
                name,
                project_id,
                project,
                paths["test"],
                seen,
                train_s=round(train.seconds, 1),
            )
        )
        print(rows[-1], flush=True)
        if project_id == "embed":
            index = project.backend._index
            speed["concepts_indexed"] = len(index)
            speed["concept_index_mb"] = round(index.memory_bytes() / 2**20, 1)
    texts = [
        d.text
        for d, _ in zip(
            projects.get("knn").corpus([paths["test"]]), range(100), strict=False
        )
    ]
    encoder = projects.get("knn").backend._encoder()
    with Timer() as t:
        encoder.encode(texts)
    speed["embed_docs_per_s"] = round(len(texts) / t.seconds, 1)
    speed["max_rss_mb"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return rows, speed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--datasets", default="archaeology,kirjastonhoitaja,gnd-tibkat-en"
    )
    args = parser.parse_args()
    rows, speed = [], {}
    for name in args.datasets.split(","):
        dataset_rows, speed[name] = bench(name)
        rows += dataset_rows
        print(name, speed[name], flush=True)
    print(markdown_table(rows, [*METRIC_COLUMNS, "train_s"]))
    save_results("dense", {"rows": rows, "speed": speed})


if __name__ == "__main__":
    main()
