"""How much omikuji holds for a scale size's training data: the documents'
feature weights (one copy; omikuji holds two while it trains) and the
subjects' centroid weights, whole and pruned at omikuji's `centroid_threshold`.

    nice -n 10 python benchmarks/xmc_centroids.py --size L

Reads the size's data made by `benchmarks/scale_stages.py` (its --work
folder), vectorises the training documents as `xmc` does (TF-IDF, its
default `min_df` and `max_features`), and counts the non-zero entries of
Y^T X, subjects x terms, with each document's row L2-normalised as omikuji
normalises it before summing the centroids; the centroids are normalised
too, then compared with each threshold. Writes
benchmarks/results/xmc_centroids-SIZE.json.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save_results  # noqa: E402

THRESHOLDS = [0.0, 0.001, 0.005, 0.01, 0.02, 0.05]
LABELS_AT_ONCE = 5_000  # centroids computed a block of subjects at a time


def features_and_subjects(folder: Path):
    """The training documents' TF-IDF rows (as xmc makes them) and subjects."""
    from backends.xmc import XmcParams
    from indexer.corpus import indexed_texts
    from indexer.features import TfidfFeatures
    from indexer.project import Projects

    project = Projects.from_path(folder / "projects.cfg").get("xmc")
    corpus = project.corpus([folder / "train.tsv"])
    defaults = XmcParams()
    subjects: list = []
    features = TfidfFeatures(project.language, analyzer=str(project.analyzer_spec))
    x = features.fit_transform(
        indexed_texts(corpus, subjects, "Vectorising"),
        min_df=defaults.min_df,
        max_features=defaults.max_features,
    )
    return x.tocsr().astype(np.float32), [sorted(set(s)) for s in subjects]


def centroid_weights(x, subjects: list[list[int]]) -> dict[float, int]:
    """Non-zero centroid weights kept at each threshold."""
    from backends.xmc import target_columns

    labels = np.unique(np.concatenate([np.asarray(s) for s in subjects]))
    y = target_columns(subjects, labels).astype(np.float32)
    kept = dict.fromkeys(THRESHOLDS, 0)
    for start in range(0, y.shape[1], LABELS_AT_ONCE):
        block = (y[:, start : start + LABELS_AT_ONCE].T @ x).tocsr()
        norms = np.sqrt(np.asarray(block.multiply(block).sum(axis=1)).ravel())
        norms[norms == 0] = 1
        weights = np.abs((sp.diags(1 / norms) @ block).data)
        for threshold in THRESHOLDS:
            kept[threshold] += int((weights >= threshold).sum())
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="S")
    parser.add_argument("--work", type=Path, default=Path("/tmp/scale-stages"))
    args = parser.parse_args()
    folder = args.work / args.size
    if not (folder / "train.tsv").is_file():
        sys.exit(f"{folder}: no data; make it with benchmarks/scale_stages.py")
    started = time.perf_counter()
    x, subjects = features_and_subjects(folder)
    kept = centroid_weights(x, subjects)
    results = {
        "size": args.size,
        "documents": x.shape[0],
        "terms": x.shape[1],
        "feature_weights": int(x.nnz),
        "weights_a_document": round(x.nnz / x.shape[0], 1),
        "subjects_used": len({s for doc in subjects for s in doc}),
        "centroid_weights": {str(t): n for t, n in kept.items()},
        "seconds": round(time.perf_counter() - started, 1),
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    }
    for threshold, count in kept.items():
        print(f"centroid_threshold {threshold}: {count:,} weights")
    print({k: v for k, v in results.items() if k != "centroid_weights"})
    print(save_results("xmc_centroids", results, args.size))


if __name__ == "__main__":
    main()
