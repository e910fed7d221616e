"""Coming from Annif: converted Annif projects against Annif's own figures,
and online learning against retraining.

    python benchmarks/annif_compat.py [--parts convert,learn] [--skip-knn]

convert: `import-annif` turns ../shared/peers/annif-projects.cfg into our
configuration; its kirjastonhoitaja projects (tfidf, mllm -> lexical, omikuji
Bonsai -> xmc) are trained on train.tsv and evaluated on fulltext/validate,
the split of Annif's reference figures.

learn: each backend that learns online is trained on 80% of the training
documents (by the md5 of each line) and then learns the other 20%, against
training on all of them: F1@5 on the evaluation split and the seconds of
`learn` against those of a full retraining. knn embeds with
multilingual-e5-small, too slow on CPU for kirjastonhoitaja's full texts
three times over, so it is measured on archaeology.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    DATASETS,
    Timer,
    dataset_paths,
    evaluate,
    markdown_table,
    save_results,
    split_lines,
    training_counts,
    write_config,
)

from indexer.annif_import import (  # noqa: E402
    convert_projects,
    read_annif_projects,
    render,
)
from indexer.project import Projects  # noqa: E402

PEERS = DATASETS.parent / "peers"
KH = DATASETS / "yso-kirjastonhoitaja"
#: Annif 1.4.3 on kirjastonhoitaja train -> fulltext/validate (F1@5, nDCG):
#: tfidf and mllm from ../shared/peers/README.md; omikuji Bonsai run here with
#: the peers' shim (annif train kh-bonsai train.tsv; annif eval ... -m F1@5)
ANNIF = {"kh-tfidf": 0.289, "kh-mllm": 0.335, "kh-bonsai": 0.3257}
CONVERTED = {"kh-tfidf": "tfidf", "kh-mllm": "lexical", "kh-bonsai": "xmc (bonsai)"}


def bench_convert(workdir: Path) -> list[dict]:
    source = PEERS / "annif-projects.cfg"
    projects = [
        p for p in convert_projects(read_annif_projects(source)) if p.id in CONVERTED
    ]
    cfg = workdir / "projects.cfg"
    cfg.write_text(render(projects, source, {"yso-labels": KH / "vocab.ttl"}))
    loaded = Projects.from_path(cfg)
    train, validate = KH / "train.tsv", KH / "fulltext" / "validate"
    seen = training_counts(loaded.get("kh-tfidf"), train)
    rows = []
    for project_id, backend in CONVERTED.items():
        project = loaded.get(project_id)
        with Timer() as t:
            project.train([train])
        metrics, _, _ = evaluate(project, validate, seen)
        rows.append(
            {
                "Annif project": project_id,
                "converted to": backend,
                "F1@5": metrics["f1@5"],
                "Annif F1@5": ANNIF[project_id],
                "difference": metrics["f1@5"] - ANNIF[project_id],
                "nDCG@10": metrics["ndcg@10"],
                "unseen R@10": metrics["unseen_recall@10"],
                "train s": round(t.seconds, 1),
            }
        )
        print(rows[-1], flush=True)
    return rows


def learn_split(train: Path, workdir: Path) -> tuple[Path, Path]:
    split = split_lines(train, workdir, parts=(("first", 4), ("rest", 1)))
    return split["first"], split["rest"]


def compare(
    dataset: str,
    backend: str,
    settings: dict,
    paths: dict,
    workdir: Path,
    before=None,
) -> dict:
    """F1@5 and seconds: trained on all of `paths['train']` against trained on
    80% of it and then learning the rest. Each in its own data directory, so
    neither reuses the other's embedding cache. `before(projects)` prepares
    a fresh workspace (trains sources)."""
    first, rest = learn_split(paths["train"], workdir)
    results = {}
    for variant in ("retrain", "learn"):
        home = workdir / variant
        home.mkdir()
        cfg = write_config(home, "vocab", paths["vocab"], settings)
        projects = Projects.from_path(cfg)
        if before:
            before(projects)
        project = projects.get("subject")
        if variant == "retrain":
            seconds = project.train([paths["train"]])["seconds"]
        else:
            project.train([first])
            seconds = project.learn([rest])["seconds"]
        seen = training_counts(project, paths["seen"])
        metrics, _, _ = evaluate(project, paths["test"], seen)
        results[variant] = (metrics["f1@5"], seconds)
    row = {
        "dataset": dataset,
        "backend": backend,
        "F1@5 retrained on 100%": results["retrain"][0],
        "F1@5 80% + learn 20%": results["learn"][0],
        "difference": results["learn"][0] - results["retrain"][0],
        "retrain s": round(results["retrain"][1], 1),
        "learn s": round(results["learn"][1], 1),
    }
    print(row, flush=True)
    return row


def bench_learn(workdir: Path, skip_knn: bool) -> list[dict]:
    rows = []
    kh = {
        "vocab": KH / "vocab.ttl",
        "train": KH / "train.tsv",
        "seen": KH / "train.tsv",
        "test": KH / "fulltext" / "validate",
    }
    arch = dataset_paths("archaeology", workdir)
    arch["seen"] = arch["train"]
    for backend in ("tfidf", "lexical"):
        for name, paths in (("kirjastonhoitaja", kh), ("archaeology", arch)):
            home = workdir / f"{backend}-{name}"
            home.mkdir()
            settings = {"subject": {"language": "fi", "backend": backend}}
            rows.append(compare(name, backend, settings, paths, home))
    rows.append(bench_fusion(workdir / "fusion", kh))
    if not skip_knn:
        home = workdir / "knn"
        home.mkdir()
        settings = {"subject": {"language": "fi", "backend": "knn"}}
        rows.append(compare("archaeology", "knn", settings, arch, home))
    return rows


def bench_fusion(workdir: Path, kh: dict) -> dict:
    """The calibrated fusion of tfidf, lexical and xmc: the sources are trained
    on 85% of train, the fusion on the other 15% (all of it, or 80% of it and
    then learning the rest)."""
    workdir.mkdir()
    split = split_lines(kh["train"], workdir, parts=(("sources", 17), ("tune", 3)))
    sources = {
        "tfidf": {"language": "fi", "backend": "tfidf"},
        "lexical": {"language": "fi", "backend": "lexical"},
        "xmc": {"language": "fi", "backend": "xmc"},
    }
    fusion = {"language": "fi", "backend": "calibrated", "sources": ", ".join(sources)}

    def train_sources(projects):
        for source in sources:
            projects.get(source).train([split["sources"]])

    paths = {**kh, "train": split["tune"], "seen": split["sources"]}
    return compare(
        "kirjastonhoitaja",
        "calibrated (tfidf, lexical, xmc)",
        {**sources, "subject": fusion},
        paths,
        workdir,
        before=train_sources,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--parts", default="convert,learn")
    parser.add_argument("--skip-knn", action="store_true")
    args = parser.parse_args()
    parts = args.parts.split(",")
    results = {}
    with tempfile.TemporaryDirectory(prefix="indexer-annif-") as tmp:
        if "convert" in parts:
            home = Path(tmp) / "convert"
            home.mkdir()
            results["convert"] = bench_convert(home)
            print(markdown_table(results["convert"], list(results["convert"][0])))
        if "learn" in parts:
            results["learn"] = bench_learn(Path(tmp), args.skip_knn)
            print(markdown_table(results["learn"], list(results["learn"][0])))
    print(f"Saved {save_results('annif_compat', results)}")


if __name__ == "__main__":
    main()
