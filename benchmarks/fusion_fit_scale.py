"""Time and peak memory of fitting the calibrated fusion, by the number of
held-out documents: calibrators, the cross-validated combination and the
choice of unseen slots (what `indexer train FUSION` does once its sources have
scored the documents), on seeded synthetic scores.

    nice -n 10 python benchmarks/fusion_fit_scale.py --documents 10000,50000,200000

Each size runs in a fresh process (its peak resident set is its own). The
scores: 3 sources, each suggesting 50 of 100,000 subjects per document with
scores that are higher, on average, for the document's 4 gold subjects; the
documents in 5 groups (the folds of a cross-fit), each with its own training
frequencies. This measures the fit itself on every document given: how
much a fusion's `fit_documents` (the sample of the training documents it is
fitted on) costs.

Prints a markdown table with each size's growth exponent; writes
benchmarks/results/fusion_fit_scale.json.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, save_results  # noqa: E402

SUBJECTS = 100_000
SOURCES = 3
PER_SOURCE = 50
GOLD = 4
GROUPS = 5


def synthetic_heldout(documents: int, seed: int = 0):
    """A grouped HeldOut of `documents` documents scored by SOURCES sources."""
    import scipy.sparse as sp

    from indexer.suggestion import SuggestionBatch

    rng = np.random.default_rng(seed)
    gold = rng.integers(0, SUBJECTS, size=(documents, GOLD))
    batches = []
    for _ in range(SOURCES):
        picked = rng.integers(0, SUBJECTS, size=(documents, PER_SOURCE))
        hits = rng.random((documents, GOLD)) < 0.6  # each source finds 60%
        picked[:, :GOLD] = np.where(hits, gold, picked[:, :GOLD])
        scores = 0.6 * rng.random((documents, PER_SOURCE)).astype(np.float32)
        scores[:, :GOLD] += hits * 0.4
        rows = np.repeat(np.arange(documents), PER_SOURCE)
        matrix = sp.csr_matrix(
            (scores.ravel(), (rows, picked.ravel())), shape=(documents, SUBJECTS)
        )
        matrix.data = np.minimum(matrix.data, 1.0)  # a subject picked twice
        batches.append(SuggestionBatch(matrix))
    return _grouped(batches, gold, rng)


def _grouped(batches, gold, rng):
    import scipy.sparse as sp

    from backends.fusion import Candidates, HeldOut

    documents = len(gold)
    candidates = Candidates.from_batches(batches, PER_SOURCE)
    held = HeldOut.of_group(candidates, gold.tolist(), PER_SOURCE, None)
    held.doc_group = rng.integers(0, GROUPS, documents).astype(np.int64)
    seen = rng.zipf(1.5, size=(GROUPS, SUBJECTS)).astype(float)
    seen[rng.random((GROUPS, SUBJECTS)) < 0.2] = 0  # a fifth unseen per group
    held.group_seen = sp.csr_matrix(seen)
    return held


def fit_once(documents: int) -> dict:
    """Fit the fusion on a synthetic HeldOut (in this process)."""
    from backends.fusion import FusionModel
    from backends.fusion_cv import choose_unseen_slots

    held = synthetic_heldout(documents)
    built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    model = FusionModel.fit(
        held.candidates, held.gold, held.frequency(np.zeros(0)), per_source=PER_SOURCE
    )
    slots = choose_unseen_slots(held, model.held_out_scores, 10, [SOURCES - 1])
    return {
        "documents": documents,
        "candidates": len(held.candidates),
        "fit_s": round(time.perf_counter() - started, 1),
        "scores_mb": round(built),
        "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "slots": slots["slots"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", default="10000,50000,200000")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(fit_once(args.one)))
        return
    rows = []
    for n in (int(x) for x in args.documents.split(",")):
        command = [sys.executable, __file__, "--one", str(n)]
        out = subprocess.run(command, check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], file=sys.stderr)
    for before, after in zip(rows, rows[1:], strict=False):
        ratio = math.log(after["documents"] / before["documents"])
        after["time_exponent"] = round(
            math.log(after["fit_s"] / before["fit_s"]) / ratio, 2
        )
        after["memory_exponent"] = round(
            math.log(after["peak_mb"] / before["peak_mb"]) / ratio, 2
        )
    print(markdown_table(rows, list(rows[-1])))
    save_results("fusion_fit_scale", rows)


if __name__ == "__main__":
    main()
