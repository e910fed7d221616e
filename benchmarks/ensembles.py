"""Ensemble benchmark: single backends, the weighted-mean ensemble (as
configured and tuned by `indexer hyperopt`) and the calibrated fusion.

    python benchmarks/ensembles.py [--datasets archaeology,kirjastonhoitaja]
        [--extra knn,embed] [--trials 200] [--no-refit]
        [--set embed.finetune=1 ...] [--slots 4,5] [--tag TAG]

Protocol, per dataset (the evaluation split is never used for tuning):

- archaeology (train -> test) and kirjastonhoitaja (train -> validate): 15% of
  train (md5 of the line) is held out as the tuning split;
  gnd-tibkat-en: train-en is split 80/10/10 into train/tune/test.
- The sources are trained on train minus tune; the ensemble weights
  (`hyperopt`) and the calibrated fusion (`train`) are fitted on tune.
- The ensembles are evaluated as configured (`unseen_slots = auto`: some of
  the top 10 kept for subjects unseen in training) and with
  `unseen_slots = 0`; `--slots 4,5` adds the calibrated fusion with those
  numbers of slots (the trade-off between unseen recall and nDCG).
- Then the sources are retrained on all training data (train + tune) and
  every row is evaluated with those models: the single backends are exactly
  the ensembles' sources. `--no-refit` skips the retraining.

`--set SOURCE.KEY=VALUE` (repeatable) changes one setting of a source, e.g.
`--set embed.finetune=1` to fine-tune embed's document encoder.

Prints a markdown table; writes benchmarks/results/ensembles[-TAG].json. Work
directories (models, embedding cache) stay in benchmarks/results/work.
"""

from __future__ import annotations

import argparse
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
    split_lines,
    training_counts,
    write_config,
)

from indexer.hyperopt import hyperopt  # noqa: E402
from indexer.project import Projects  # noqa: E402

SOURCES = ["tfidf", "lexical", "xmc"]
# cross-lingual datasets: settings for optional dense sources
EXTRA = {
    "gnd-tibkat-en": {
        "embed": {"label_language": "de", "model": "multilingual-e5-small"},
        "lexical": {"label_language": "de"},
    }
}


def project_settings(
    name: str, language: str, sources: list[str], changes: dict[str, dict]
) -> dict:
    settings = {
        source: {
            "language": language,
            "backend": source,
            **EXTRA.get(name, {}).get(source, {}),
            **changes.get(source, {}),
        }
        for source in sources
    }
    equal = ", ".join(f"{s}:1" for s in sources)
    settings["ensemble"] = {
        "language": language,
        "backend": "ensemble",
        "sources": equal,
    }
    settings["ensemble-tuned"] = dict(settings["ensemble"])
    settings["calibrated"] = {
        "language": language,
        "backend": "calibrated",
        "sources": ", ".join(sources),
    }
    return settings


def work_directory(name: str) -> Path:
    """Kept between runs: the embedding cache spares knn and embed re-encoding."""
    workdir = RESULTS / "work" / f"ensembles-{name}"
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def splits(name: str, workdir: Path) -> dict:
    """train (sources, before refit), tune, full (refit) and test corpora."""
    paths = dataset_paths(name, workdir)
    if "tune" in paths:  # gnd: train-en was split 80/10/10
        paths["full"] = [paths["train"], paths["tune"]]
        paths["train"] = [paths["train"]]
        return paths
    part = split_lines(paths["train"], workdir, parts=(("fit", 17), ("tune", 3)))
    paths.update(full=[paths["train"]], train=[part["fit"]], tune=part["tune"])
    return paths


def parse_changes(items: list[str], sources: list[str]) -> dict[str, dict]:
    """{'embed': {'finetune': '1'}} from ['embed.finetune=1']."""
    changes: dict[str, dict] = {}
    for item in items:
        target, sep, value = item.partition("=")
        project_id, dot, key = target.partition(".")
        if not (sep and dot and key) or project_id not in sources:
            raise SystemExit(
                f"--set {item}: expected SOURCE.KEY=VALUE with SOURCE one of "
                f"{', '.join(sources)}"
            )
        changes.setdefault(project_id, {})[key] = value
    return changes


def bench(
    name: str,
    workdir: Path,
    sources: list[str],
    trials: int,
    refit: bool,
    changes: dict[str, dict],
    slots: list[int],
):
    paths = splits(name, workdir)
    settings = project_settings(name, paths["language"], sources, changes)
    cfg = write_config(workdir, "vocab", paths["vocab"], settings)
    projects = Projects.from_path(cfg)
    info: dict = {"train_s": {}}

    for source in sources:
        with Timer() as t:
            projects.get(source).train(paths["train"], jobs=2)
        info["train_s"][source] = round(t.seconds, 1)
        print(f"{name}: trained {source} in {t.seconds:.1f} s", flush=True)

    with Timer() as t:
        result = hyperopt(
            projects.get("ensemble-tuned"), [paths["tune"]], trials=trials, seed=0
        )
    info["hyperopt"] = {
        "seconds": round(t.seconds, 1),
        "ndcg@10 (tune)": {
            "configured": result.baseline.score,
            "best": result.best.score,
        },
        "settings": result.best.settings,
    }
    projects.get("ensemble-tuned").config.params.update(result.best.settings)
    projects.get("ensemble-tuned").unload()
    print(f"{name}: hyperopt {result.best.settings} in {t.seconds:.1f} s")

    with Timer() as t:
        fusion = projects.get("calibrated").train([paths["tune"]])
    info["calibrated"] = {k: v for k, v in fusion.items() if k != "warnings"}
    info["calibrated"]["seconds"] = round(t.seconds, 1)
    print(f"{name}: calibrated fusion fitted in {t.seconds:.1f} s", flush=True)

    if refit:
        for source in sources:
            with Timer() as t:
                projects.get(source).train(paths["full"], jobs=2)
            info["train_s"][source] = round(t.seconds, 1)
        print(f"{name}: sources retrained on all training data", flush=True)
    else:
        paths["full"] = paths["train"]

    seen = training_counts(projects.get(sources[0]), paths["full"][0])
    for extra in paths["full"][1:]:
        seen = seen + training_counts(projects.get(sources[0]), extra)
    rows = []
    variants = [(p, {}) for p in sources]
    for project_id in ["ensemble", "ensemble-tuned", "calibrated"]:
        variants += [(project_id, {}), (project_id, {"unseen_slots": 0})]
    variants += [("calibrated", {"unseen_slots": n}) for n in slots]
    for project_id, overrides in variants:
        project = projects.get(project_id)
        project.config.params.update(overrides)
        project.unload()  # load the final models
        label = project_id + "".join(f" ({k}={v})" for k, v in overrides.items())
        rows.append(evaluated_row(name, label, project, paths["test"], seen))
        print(
            {k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()}
        )
        for key in overrides:
            del project.config.params[key]
    return rows, info


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--datasets", default="archaeology,kirjastonhoitaja,gnd-tibkat-en"
    )
    parser.add_argument(
        "--extra", default="", help="more sources, e.g. knn,embed (slower)"
    )
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--no-refit", action="store_true")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SOURCE.KEY=VALUE",
        help="change a source's setting, e.g. embed.finetune=1 (repeatable)",
    )
    parser.add_argument("--tag", default="", help="suffix of the results file")
    parser.add_argument(
        "--slots",
        type=lambda text: [int(n) for n in text.split(",") if n],
        default=[],
        help="more unseen_slots settings for the calibrated fusion, e.g. 4,5",
    )
    args = parser.parse_args()
    sources = SOURCES + [s for s in args.extra.split(",") if s]
    changes = parse_changes(args.set, sources)
    rows, info = [], {}
    for name in args.datasets.split(","):
        with Timer() as t:
            dataset_rows, info[name] = bench(
                name,
                work_directory(name),
                sources,
                args.trials,
                not args.no_refit,
                changes,
                args.slots,
            )
        info[name]["total_s"] = round(t.seconds, 1)
        print(f"{name}: {t.seconds:.0f} s in all", flush=True)
        rows += dataset_rows
    columns = [c for c in METRIC_COLUMNS if c != "precision@5"]
    print(markdown_table(rows, columns))
    save_results(
        "ensembles",
        {"rows": rows, "info": info, "sources": sources, "changes": changes},
        args.tag,
    )


if __name__ == "__main__":
    main()
