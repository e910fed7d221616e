"""Held-out benchmark: the calibrated fusion fitted on a tuning split against
the cross-fitted one, judged on a split that nothing was tuned on.

    python benchmarks/heldout.py [--datasets kirjastonhoitaja,ykl-makupalat,...]
        [--folds 5] [--methods split,crossfit] [--extra embed]
        [--set embed.finetune=1] [--tag TAG]

Protocol, per dataset:

- A fixed held-out split is taken from the dataset's training data by the md5
  of each line (1 line in 10, as the other benchmarks split gnd-tibkat); all
  training and every choice (calibration, combination, unseen slots) use the
  rest only, and the held-out split is evaluated once, at the end.
- The validate split is the dataset's own (kirjastonhoitaja and makupalat
  validate, archaeology test); gnd-tibkat-en has none, so one more line in 10
  of train-en is set apart for it.
- Tuning-split fusion: the sources (tfidf, xmc, lexical) are trained on 85% of
  the rest and the fusion on the other 15%; then the sources are trained on
  all of the rest.
- Cross-fitted fusion: `indexer train fusion REST --cross-fit K`.
- Both fusions then use the same sources, trained on all of the rest.

Prints F1@5, nDCG@10, R@10 and unseen R@10 (gold subjects that never occur in
the rest) per split, the training and evaluation time, the number of unseen
examples each fusion learnt from, the unseen slots it chose, and the share of
the best zero-shot source's unseen recall it keeps. Writes
benchmarks/results/heldout[-TAG].json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    DATASETS,
    RESULTS,
    Timer,
    evaluated_row,
    markdown_table,
    save_results,
    split_lines,
    training_counts,
    write_config,
)
from ensembles import parse_changes  # noqa: E402

from indexer.backend import LEXICAL  # noqa: E402
from indexer.project import Projects  # noqa: E402

SOURCES = ["tfidf", "xmc", "lexical"]
# name -> (vocabulary, language, train, validate split or None)
SPEC = {
    "kirjastonhoitaja": (
        "yso-kirjastonhoitaja/vocab.ttl",
        "fi",
        "yso-kirjastonhoitaja/train.tsv",
        "yso-kirjastonhoitaja/validate.tsv",
    ),
    "ykl-makupalat": (
        "ykl-makupalat/vocab.ttl",
        "fi",
        "ykl-makupalat/train.tsv",
        "ykl-makupalat/validate.tsv",
    ),
    "archaeology": (
        "yso-archaeology/vocab.ttl",
        "fi",
        "yso-archaeology/train.tsv",
        "yso-archaeology/test.tsv",
    ),
    "gnd-tibkat-en": ("gnd-tibkat/vocab.ttl", "en", "gnd-tibkat/train-en.tsv", None),
}
SETTINGS = {
    "gnd-tibkat-en": {
        "lexical": {"label_language": "de"},
        "embed": {"label_language": "de", "model": "multilingual-e5-small"},
    }
}
METHODS = {"split": "fusion-split", "crossfit": "fusion-crossfit"}
TUNING = (("fit", 16), ("tune", 3))  # of the rest: sources fit, fusion tune


def fit_split_fusion(
    projects: Projects, sources: list[str], fusion: str, paths: dict, jobs: int
) -> dict:
    """The tuning-split fusion: the sources trained on `paths['fit']`, then the
    fusion on `paths['tune']` as those sources score it (its training info)."""
    for source in sources:
        projects.get(source).train([paths["fit"]], jobs=jobs)
    return projects.get(fusion).train([paths["tune"]])


def splits(name: str, workdir: Path) -> dict:
    """rest, fit + tune (a split of rest), heldout and validate corpora."""
    _, _, train, validate = SPEC[name]
    if validate is None:
        parts = split_lines(
            DATASETS / train,
            workdir,
            parts=(("rest", 8), ("validate", 1), ("heldout", 1)),
        )
    else:
        parts = split_lines(DATASETS / train, workdir, (("rest", 9), ("heldout", 1)))
        parts["validate"] = DATASETS / validate
    tuning = split_lines(parts["rest"], workdir, parts=TUNING)
    return {**parts, **tuning}


def projects_for(
    name: str, workdir: Path, folds: int, sources: list[str], changes: dict
) -> Projects:
    vocab, language, _, _ = SPEC[name]
    settings = {
        source: {
            "language": language,
            "backend": source,
            **SETTINGS.get(name, {}).get(source, {}),
            **changes.get(source, {}),
        }
        for source in sources
    }
    fusion = {"language": language, "backend": "calibrated", "measure_sources": 1}
    fusion["sources"] = ", ".join(sources)
    settings["fusion-split"] = dict(fusion)
    settings["fusion-crossfit"] = {**fusion, "cross_fit": folds}
    return Projects.from_path(
        write_config(workdir, "vocab", DATASETS / vocab, settings)
    )


def bench(
    name: str, folds: int, sources: list[str], methods: list[str], changes: dict
) -> tuple[list[dict], dict]:
    workdir = RESULTS / "work" / f"heldout-{name}"
    workdir.mkdir(parents=True, exist_ok=True)
    paths = splits(name, workdir)
    projects = projects_for(name, workdir, folds, sources, changes)
    info: dict = {}

    if "split" in methods:
        with Timer() as t:
            split_info = fit_split_fusion(projects, sources, "fusion-split", paths, 2)
        info["fusion-split"] = {
            "train_s": round(t.seconds, 1),
            **_fusion_info(split_info),
        }
        print(f"{name}: tuning-split fusion in {t.seconds:.0f} s", flush=True)

    if "crossfit" in methods:
        with Timer() as t:  # also trains the sources on all of the rest
            crossfit_info = projects.get("fusion-crossfit").train(
                [paths["rest"]], jobs=2
            )
        info["fusion-crossfit"] = {
            "train_s": round(t.seconds, 1),
            **_fusion_info(crossfit_info),
        }
        print(f"{name}: cross-fitted fusion in {t.seconds:.0f} s", flush=True)
    else:
        with Timer() as t:
            for source in sources:
                projects.get(source).train([paths["rest"]], jobs=2)
        info["fusion-split"]["refit_s"] = round(t.seconds, 1)

    seen = training_counts(projects.get(sources[0]), paths["rest"])
    fusions = [METHODS[m] for m in methods]
    zero_shot = [s for s in sources if projects.get(s).kind == LEXICAL]
    rows = []
    for split in ("validate", "heldout"):
        for project_id in [*sources, *fusions]:
            project = projects.get(project_id)
            project.unload()
            row = evaluated_row(name, project_id, project, paths[split], seen)
            rows.append({"split": split, **row})
            shown = {
                k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()
            }
            print(shown, flush=True)
        best = max(
            r["unseen_recall@10"]
            for r in rows
            if r["split"] == split and r["backend"] in zero_shot
        )
        for r in rows:
            if r["split"] == split and r["backend"] in fusions:
                r["unseen kept"] = r["unseen_recall@10"] / best if best else 1.0
    return rows, info


def _fusion_info(info: dict) -> dict:
    slots = info.get("unseen_slots") or {}
    return {
        "unseen_examples": info.get("unseen_examples"),
        "heldout_documents": info.get("heldout_documents"),
        "unseen_slots": slots.get("slots"),
        "cross_fit": info.get("cross_fit"),
        "source_gains": info.get("source_gains"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", default=",".join(SPEC))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--methods", default="split,crossfit")
    parser.add_argument("--extra", default="", help="more sources, e.g. embed")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SOURCE.KEY=VALUE",
        help="change a source's setting, e.g. embed.finetune=1 (repeatable)",
    )
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    sources = SOURCES + [s for s in args.extra.split(",") if s]
    methods = [m for m in args.methods.split(",") if m]
    changes = parse_changes(args.set, sources)
    rows, info = [], {}
    for name in args.datasets.split(","):
        with Timer() as t:
            dataset_rows, info[name] = bench(
                name, args.folds, sources, methods, changes
            )
        info[name]["total_s"] = round(t.seconds, 1)
        rows += dataset_rows
        for project_id in (METHODS[m] for m in methods):
            for row in dataset_rows:
                if row["backend"] == project_id:
                    row["train s"] = info[name][project_id]["train_s"]
                    row["unseen examples"] = info[name][project_id]["unseen_examples"]
                    row["slots"] = info[name][project_id]["unseen_slots"]
        print(f"{name}: {t.seconds:.0f} s in all", flush=True)
    columns = [
        "dataset",
        "split",
        "backend",
        "f1@5",
        "ndcg",
        "recall@10",
        "unseen_recall@10",
        "unseen_gold",
        "unseen kept",
        "unseen examples",
        "slots",
        "train s",
        "ms/doc",
    ]
    print(markdown_table(rows, columns))
    save_results(
        "heldout",
        {"rows": rows, "info": info, "sources": sources, "changes": changes},
        args.tag,
    )


if __name__ == "__main__":
    main()
