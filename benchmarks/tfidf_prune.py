"""How much of the tfidf model `min_weight` drops, and whether it changes the
top 10 subjects: trained on the first 80% of a dataset's train split, compared
on the other 20% (never the test files).

    nice -n 10 python benchmarks/tfidf_prune.py [--dataset yso-archaeology]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS, markdown_table  # noqa: E402

WEIGHTS = [0.0, 0.001, 0.002, 0.005, 0.01, 0.02]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="yso-kirjastonhoitaja")
    parser.add_argument("--language", default="fi")
    args = parser.parse_args()
    from indexer.project import Projects

    data = DATASETS / args.dataset
    lines = [
        line
        for line in (data / "train.tsv").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    cut = len(lines) * 4 // 5
    work = Path(tempfile.mkdtemp(prefix="tfidf-prune-"))
    (work / "fit.tsv").write_text("\n".join(lines[:cut]) + "\n", encoding="utf-8")
    held = [line.split("\t")[0] for line in lines[cut:]]
    sections = [f"[vocab:v]\nsource = {data / 'vocab.ttl'}\n"]
    for w in WEIGHTS:
        sections.append(
            f"[p{WEIGHTS.index(w)}]\nlanguage = {args.language}\nvocab = v\n"
            f"backend = tfidf\nmin_weight = {w}\n"
        )
    (work / "projects.cfg").write_text("\n".join(sections))
    projects = Projects.from_path(work / "projects.cfg")
    rows, reference = [], None
    for i, w in enumerate(WEIGHTS):
        project = projects.get(f"p{i}")
        project.train([work / "fit.tsv"])
        model = project.model_dir.resolve() / "centroids"
        size = sum(f.stat().st_size for f in model.iterdir()) / 1e6
        batch = project.suggest(held, limit=10)
        tops = [[s.subject for s in batch.row(j)] for j in range(len(held))]
        if reference is None:
            reference = tops
        same_set = sum(set(a) == set(b) for a, b in zip(tops, reference, strict=True))
        same_order = sum(a == b for a, b in zip(tops, reference, strict=True))
        rows.append(
            {
                "min_weight": w,
                "model MB": round(size, 2),
                "same top-10 set": f"{same_set}/{len(held)}",
                "same top-10 order": f"{same_order}/{len(held)}",
            }
        )
    print(f"## {args.dataset}: {cut} documents trained, {len(held)} compared\n")
    print(
        markdown_table(
            rows, ["min_weight", "model MB", "same top-10 set", "same top-10 order"]
        )
    )


if __name__ == "__main__":
    main()
