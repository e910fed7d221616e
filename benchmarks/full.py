"""The example configuration examples/full.cfg on a shared dataset: every
backend, the zero-shot ensemble and the calibrated `full` fusion.

    python benchmarks/full.py [--datasets kirjastonhoitaja] [--workdir DIR]
        [--tune-docs N]

Protocol (as benchmarks/ensembles.py, without hyperopt and without the refit):
the sources train on 85% of train (md5 of the line), the fusion on the other
15%, and every row is evaluated on the evaluation split. The work directory
is shared with ensembles.py, so its embedding cache is reused.

The LLM backends make this slow on CPU; each source's suggestions for a batch
are computed once and reused by the ensembles that contain it (the scores are
the same as without the reuse; an ensemble's ms/doc is its fusion's time plus
its sources' own).
"""

from __future__ import annotations

import argparse
import configparser
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    METRIC_COLUMNS,
    ROOT,
    Timer,
    evaluate,
    markdown_table,
    metric_row,
    save_results,
    training_counts,
    write_config,
)
from ensembles import splits, work_directory  # noqa: E402

from indexer.backend import ENSEMBLE  # noqa: E402
from indexer.project import Projects  # noqa: E402

EXAMPLE = ROOT / "examples" / "full.cfg"


def example_settings(language: str) -> dict[str, dict]:
    """The projects of examples/full.cfg, in the dataset's language."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(EXAMPLE, encoding="utf-8")
    sections = {}
    for name in parser.sections():
        if name.startswith("vocab:"):
            continue
        settings = dict(parser[name])
        settings.pop("vocab", None)
        settings["language"] = language
        sections[name] = settings
    return sections


def reuse_suggestions(backend) -> None:
    """Make `backend.suggest_batch` remember its answer per batch of texts."""
    original = backend.suggest_batch
    memo = {}

    def suggest_batch(texts, *args, **kwargs):
        key = tuple(texts)
        if key not in memo:
            memo[key] = original(texts, *args, **kwargs)
        return memo[key]

    backend.suggest_batch = suggest_batch


def bench(name: str, workdir: Path | None, tune_docs: int) -> tuple[list, dict]:
    workdir = workdir or work_directory(name)
    workdir.mkdir(parents=True, exist_ok=True)
    paths = splits(name, workdir)
    if tune_docs:  # the LLM sources make scoring the tuning split slow on CPU
        lines = paths["tune"].read_text(encoding="utf-8").splitlines(keepends=True)
        paths["tune"] = workdir / f"tune-{tune_docs}.tsv"
        paths["tune"].write_text("".join(lines[:tune_docs]), encoding="utf-8")
    settings = example_settings(paths["language"])
    # this protocol fits the fusions on the tuning split (heldout.py compares
    # that with cross-fitting)
    for fusion in ("full", "full-short-texts"):
        settings[fusion]["cross_fit"] = "0"
    projects = Projects.from_path(
        write_config(workdir, "vocab", paths["vocab"], settings)
    )
    ensembles = [p for p in settings if projects.get(p).backend.kind == ENSEMBLE]
    sources = [p for p in settings if p not in ensembles]
    info: dict = {"train_s": {}, "tune_docs": tune_docs or "all"}
    for project_id in sources:
        with Timer() as t:
            projects.get(project_id).train(paths["train"], jobs=2)
        info["train_s"][project_id] = round(t.seconds, 1)
        print(f"{name}: trained {project_id} in {t.seconds:.1f} s", flush=True)
    for project_id in sources:
        reuse_suggestions(projects.get(project_id).backend)
    with Timer() as t:
        projects.get("full").train([paths["tune"]])
    info["train_s"]["full"] = round(t.seconds, 1)
    print(f"{name}: fitted the fusion in {t.seconds:.1f} s", flush=True)

    seen = training_counts(projects.get("tfidf"), paths["train"][0])
    rows, test_seconds = [], {}
    for project_id in [*sources, *ensembles]:  # sources first: their answers
        project = projects.get(project_id)  # are reused by the ensembles
        metrics, seconds, documents = evaluate(project, paths["test"], seen)
        if project_id in ensembles:
            members = [p.id for p, _ in project.backend.sources()]
            seconds += sum(test_seconds[m] for m in members)
        test_seconds[project_id] = seconds
        rows.append(metric_row(name, project_id, metrics, seconds, documents))
        print(rows[-1], flush=True)
    return rows, info


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", default="kirjastonhoitaja")
    parser.add_argument("--workdir", type=Path, help="default: ensembles.py's")
    parser.add_argument(
        "--tune-docs", type=int, default=0, help="fit the fusion on the first N"
    )
    args = parser.parse_args()
    rows, info = [], {}
    for name in args.datasets.split(","):
        with Timer() as t:
            dataset_rows, info[name] = bench(name, args.workdir, args.tune_docs)
        info[name]["total_s"] = round(t.seconds, 1)
        rows += dataset_rows
    columns = [c for c in METRIC_COLUMNS if c != "precision@5"]
    print(markdown_table(rows, columns))
    save_results("full", {"rows": rows, "info": info})


if __name__ == "__main__":
    main()
