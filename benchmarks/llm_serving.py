"""llm_rank with its LLM behind `transformers serve` (engine = systemone)
against the same model in-process (engine = local), on kirjastonhoitaja:

1. parity: P(yes) of the same candidates from both engines (the server given
   the project's decision config, `indexer decision-config`): the largest
   difference and how often the two rank a document's candidates alike;
2. quality: both engines trained (calibrated) the same way, and the same
   candidates without the LLM (`combine = retrieval`): F1@5, nDCG@10,
   unseen R@10 and seconds per document;
3. scale: `indexer index --engine ray -j N` on the served project, N workers
   sharing one server, beside the in-process engine.

    python benchmarks/llm_serving.py [--model smollm2] [--docs 30]
        [--calibration-docs 30] [--workers 1,2,4]

Candidates come from `lexical` alone (no embedding of the 30k YSO concepts:
the comparison is between engines, not sources). The documents are the
`--docs` lines of validate with the lowest md5; `--calibration-docs` training
documents calibrate each engine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from common import (  # noqa: E402
    RESULTS,
    dataset_paths,
    markdown_table,
    save_results,
    training_counts,
)
from llm_rank import evaluate_modes, subsample, write_config  # noqa: E402

from indexer.project import Projects  # noqa: E402
from tests.model_servers import transformers_serve  # noqa: E402


def settings(args, language: str, url: str = "") -> dict:
    common = {
        "language": language,
        "backend": "llm_rank",
        "sources": "lexical",
        "candidates": args.candidates,
        "calibration_docs": args.calibration_docs,
        "label_context": "broader",
        "max_doc_tokens": args.max_doc_tokens,
        # SmolLM2 is English; its decision server needs one-token answers
        "prompt_language": args.prompt_language,
    }
    local = {
        **common,
        "model": args.model,
        "device": args.device,
        "dtype": "float32" if args.device == "cpu" else "auto",
        "answer_forms": "exact",
    }
    served = {
        **common,
        "engine": "systemone",
        "url": url or "http://127.0.0.1:1",
        "model": args.model_path,
        "timeout": 600,
        "concurrency": 4,
    }
    return {"local": local, "served": served}


def parity(local, served, texts: list[str]) -> dict:
    """P(yes) of both engines for the same candidates (untrained: no pruning)."""
    import numpy as np
    from scipy.stats import kendalltau

    started = time.perf_counter()
    ours = local.backend.analyse(texts)
    local_s = time.perf_counter() - started
    started = time.perf_counter()
    theirs = served.backend.analyse(texts)
    served_s = time.perf_counter() - started
    gaps, same_order, taus = [], 0, []
    for a, b in zip(ours, theirs, strict=True):
        assert (a.ids == b.ids).all()
        p, q = (1 / (1 + np.exp(-x.x[:, 1])) for x in (a, b))
        gaps.append(float(np.abs(p - q).max()))
        same_order += (
            np.argsort(-p, kind="stable").tolist()
            == np.argsort(-q, kind="stable").tolist()
        )
        if len(p) > 1:
            taus.append(kendalltau(p, q).statistic)
    return {
        "documents": len(texts),
        "candidates_per_doc": round(sum(len(a.ids) for a in ours) / len(texts), 1),
        "max_abs_p_difference": max(gaps),
        "documents_ranked_alike": f"{same_order}/{len(texts)}",
        "mean_kendall_tau": round(float(np.mean(taus)), 4),
        "local_s_per_doc": round(local_s / len(texts), 3),
        "served_s_per_doc": round(served_s / len(texts), 3),
    }


def quality(projects, sample, seen, calibration_train: Path) -> list[dict]:
    from indexer.corpus import Corpus

    rows = []
    docs = list(Corpus([sample], projects.get("local").vocab, "fi"))
    gold = [d.subjects for d in docs]
    for project_id in ("local", "served"):
        project = projects.get(project_id)
        started = time.perf_counter()
        project.train([calibration_train])
        trained = time.perf_counter() - started
        started = time.perf_counter()
        analyses = project.backend.analyse([d.text for d in docs])
        seconds = time.perf_counter() - started
        for row in evaluate_modes(
            project, analyses, gold, seen, "kirjastonhoitaja", seconds
        ):
            row["engine"] = project_id
            row["train_s"] = round(trained, 1)
            if project_id == "served" or "retrieval" not in row["backend"]:
                rows.append(row)
    return rows


def scale(
    config: Path, sample_jsonl: Path, workers: list[int], workdir: Path
) -> list[dict]:
    """`indexer index` documents/s, N workers, for each engine."""
    rows = []
    for project_id, engine in (("served", "ray"), ("local", "local")):
        for n in workers:
            output = workdir / f"index-{project_id}-{n}.jsonl"
            started = time.perf_counter()
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "indexer.cli",
                    "--projects",
                    str(config),
                    "index",
                    project_id,
                    str(sample_jsonl),
                    "--output",
                    str(output),
                    "--force",
                    "--engine",
                    engine,
                    "-j",
                    str(n),
                ],  # fmt: skip
                capture_output=True,
                text=True,
            )
            seconds = time.perf_counter() - started
            if result.returncode:
                print(result.stderr[-2000:], file=sys.stderr)
            documents = len(sample_jsonl.read_text().splitlines())
            rows.append(
                {
                    "engine": f"{project_id} ({engine} workers)",
                    "workers": n,
                    "documents": documents,
                    "seconds": round(seconds, 1),
                    "docs_per_s": round(documents / seconds, 2),
                    "ok": result.returncode == 0,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--docs", type=int, default=30)
    parser.add_argument("--calibration-docs", type=int, default=30)
    parser.add_argument("--candidates", type=int, default=30)
    parser.add_argument("--prompt-language", default="en")
    parser.add_argument("--max-doc-tokens", type=int, default=192)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--skip", default="", help="comma-separated: quality,scale")
    parser.add_argument(
        "--url", default="", help="a System One server already running (its root)"
    )
    parser.add_argument("--served-model", default="", help="its name for --model")
    parser.add_argument("--device", default="cpu", help="of the in-process model")
    args = parser.parse_args()
    from indexer.neural.models import resolve_model

    args.model_path = args.served_model or resolve_model(args.model).path
    workdir = RESULTS / "work" / "llm_serving"
    workdir.mkdir(parents=True, exist_ok=True)
    paths = dataset_paths("kirjastonhoitaja", workdir)
    sample = subsample(paths["test"], workdir / f"sample-{args.docs}.tsv", args.docs)
    calibration = subsample(
        paths["train"],
        workdir / "train-sample.tsv",
        max(args.calibration_docs * 4, 200),
    )
    data = workdir / "data"
    config = write_config(
        workdir / "projects.cfg", data, paths["vocab"], settings(args, "fi")
    )
    projects = Projects.from_path(config)
    decision = workdir / "decision.json"
    decision.write_text(json.dumps(projects.get("local").backend.decision_config()))
    results: dict = {"model": args.model}
    server = (
        contextlib.nullcontext(args.url)
        if args.url
        else transformers_serve(
            Path(args.model_path), decision, timeout=300, device=args.device
        )
    )
    with server as url:
        config = write_config(
            workdir / "projects.cfg", data, paths["vocab"], settings(args, "fi", url)
        )
        projects = Projects.from_path(config)
        texts = [line.split("\t", 1)[0] for line in sample.read_text().splitlines()]
        results["parity"] = parity(projects.get("local"), projects.get("served"), texts)
        print(json.dumps(results["parity"], indent=2))
        if "quality" not in args.skip:
            seen = training_counts(projects.get("local"), calibration)
            results["quality"] = quality(projects, sample, seen, calibration)
            columns = ["engine", "backend", "f1@5", "ndcg", "unseen_recall@10",
                       "unseen_gold", "ms/doc", "train_s"]  # fmt: skip
            print(markdown_table(results["quality"], columns))
        if "scale" not in args.skip:
            jsonl = workdir / "sample.jsonl"
            jsonl.write_text(
                "".join(
                    json.dumps({"id": str(i), "text": t}) + "\n"
                    for i, t in enumerate(texts)
                )
            )
            workers = [int(n) for n in args.workers.split(",")]
            results["scale"] = scale(config, jsonl, workers, workdir)
            print(markdown_table(results["scale"], list(results["scale"][0])))
    print(f"saved {save_results('llm_serving', results, args.model)}")


if __name__ == "__main__":
    main()
