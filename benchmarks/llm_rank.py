"""LLM re-ranking benchmark: does the llm_rank backend add anything to `lexical`
and `embed` alone, and what does the shared-prefix KV cache save?

    python benchmarks/llm_rank.py [--datasets archaeology,kirjastonhoitaja,...]
        [--docs 100] [--calibration-docs 50] [--timing-docs 3] [--candidates 30]

The LLM is slow on CPU, so every backend is evaluated on the same deterministic
subsample of the evaluation split (`--docs` documents, the lowest md5 of each
line) and the output says so. The candidates and LLM answers are computed once;
the rows of one dataset differ only in how they are combined:

- `llm_rank: retrieval only`: the calibrated logistic regression over the
  lexical, embed and knn scores, without the LLM (the re-ranking baseline);
- `llm_rank: LLM alone`: the Platt-calibrated P(yes);
- `llm_rank: LLM + retrieval`: the learned combination (the backend's default).

The data directory (vocabulary, embedding cache, the `lexical` and `embed`
projects) is shared with benchmarks/dense.py's work directory, so trained
baselines and cached embeddings are reused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    METRIC_COLUMNS,
    RESULTS,
    Timer,
    dataset_paths,
    evaluated_row,
    markdown_table,
    metric_row,
    save_results,
    training_counts,
)
from dense import project_settings  # noqa: E402

from indexer.project import Projects  # noqa: E402

# GND labels are German only, the documents English. Embedding its 204k labels
# with the multilingual E5 takes ~45 min on 2 CPU cores, MiniLM ~7 min: the
# embed source and baseline use MiniLM there (dense.py uses E5).
GND_EMBED = {"model": "minilm", "label_language": "de"}
LLM_EXTRA = {
    "gnd-tibkat-en": {
        "embed_model": "minilm",
        "label_language": "de",
        "knn_model": "auto",
    }
}
MODES = {
    "retrieval": "llm_rank: retrieval only",
    "llm": "llm_rank: LLM alone",
    "learned": "llm_rank: LLM + retrieval",
    "configured": "llm_rank: fixed weight (untrained default)",
}


def write_config(path: Path, data_dir: Path, vocab: Path, sections: dict) -> Path:
    lines = ["[indexer]", f"data_dir = {data_dir}", "", "[vocab:vocab]"]
    lines += [f"source = {vocab}", ""]
    for project_id, settings in sections.items():
        lines.append(f"[{project_id}]")
        lines += [f"{k} = {v}" for k, v in {"vocab": "vocab", **settings}.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def subsample(source: Path, target: Path, n: int) -> Path:
    """The `n` lines of `source` with the lowest md5: deterministic, unbiased."""
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    lines.sort(key=lambda line: hashlib.md5(line.encode()).hexdigest())
    target.write_text("".join(lines[:n]), encoding="utf-8")
    return target


def evaluate_modes(project, analyses, gold, seen, name, seconds) -> list[dict]:
    """One metric row per way of combining the same candidates (`seconds`: the
    whole analysis; the retrieval-only row is charged without the LLM's time)."""
    from indexer.eval import Evaluator
    from indexer.suggestion import SuggestionBatch

    backend = project.backend
    n_subjects = len(project.vocab)
    found = sum(
        len(set(g) & set(a.ids.tolist())) for g, a in zip(gold, analyses, strict=True)
    )
    recall = found / max(sum(len(g) for g in gold), 1)
    llm_seconds = sum(a.llm_seconds for a in analyses)
    rows = []
    for mode, label in MODES.items():
        evaluator = Evaluator(n_subjects, limit=5, seen=seen)
        batch = SuggestionBatch.from_rows(
            [(a.ids, backend.combine(a.x, mode)) for a in analyses], n_subjects
        )
        evaluator.add(gold, batch)
        rows.append(
            metric_row(
                name,
                label,
                evaluator.results(),
                seconds - (llm_seconds if mode == "retrieval" else 0.0),
                len(analyses),
                candidate_recall=round(recall, 3),
            )
        )
    return rows


TIMINGS = {  # name -> backend parameters
    "default": {},
    "no_pruning": {"prune": False},
    "no_prefix_cache": {"prefix_cache": False, "prune": False},
    "one_example": {"few_shot": 1},
    "no_examples": {"few_shot": 0},
    "document_128_tokens": {"max_doc_tokens": 128},
}


def configure(backend, settings: dict) -> None:
    """Set backend parameters in place; the prompt builder keeps its own copy
    of the document length."""
    for key, value in settings.items():
        setattr(backend.params, key, value)
    backend._prompts.max_doc_tokens = backend.params.max_doc_tokens


def timing(backend, texts: list[str]) -> dict:
    """Seconds per document, LLM seconds per document and candidates judged,
    as configured, without pruning, without the prefix cache, with fewer
    example documents and with a shorter document in the prompt."""
    out = {}
    for name, settings in TIMINGS.items():
        saved = {k: getattr(backend.params, k) for k in settings}
        configure(backend, settings)
        started = time.perf_counter()
        analyses = backend.analyse(texts)
        seconds = time.perf_counter() - started
        configure(backend, saved)
        llm = sum(a.llm_seconds for a in analyses)
        judged = sum(a.judged for a in analyses)
        out[f"{name}_s_per_doc"] = round(seconds / len(texts), 3)
        out[f"{name}_llm_s_per_doc"] = round(llm / len(texts), 3)
        out[f"{name}_judged_per_doc"] = round(judged / len(texts), 1)
        out[f"{name}_prefix_tokens"] = round(
            sum(a.prefix_tokens for a in analyses) / len(analyses), 1
        )
        if name == "default":
            out["suffix_tokens"] = round(
                sum(a.suffix_tokens for a in analyses) / max(judged, 1), 1
            )
            out["candidates_per_doc"] = round(
                sum(len(a.ids) for a in analyses) / len(texts), 1
            )
    return out


def bench(name: str, args) -> tuple[list[dict], dict]:
    shared = RESULTS / "work" / name  # benchmarks/dense.py's work directory
    workdir = RESULTS / "work" / f"llm_rank-{name}"
    workdir.mkdir(parents=True, exist_ok=True)
    paths = dataset_paths(name, workdir)
    language = paths["language"]
    settings = project_settings(name, language)
    if name == "gnd-tibkat-en":
        settings["embed"] = {"language": language, "backend": "embed", **GND_EMBED}
    baselines = {k: v for k, v in settings.items() if k in args.baselines}
    llm = {
        "language": language,
        "backend": "llm_rank",
        "calibration_docs": args.calibration_docs,
        "candidates": args.candidates,
        "few_shot": args.few_shot,
        **({"max_doc_tokens": args.max_doc_tokens} if args.max_doc_tokens else {}),
        **LLM_EXTRA.get(name, {}),
        **({"model": args.model} if args.model else {}),
    }
    projects = Projects.from_path(
        write_config(
            workdir / "projects.cfg",
            shared / "data",
            paths["vocab"],
            {**baselines, "llm_rank": llm},
        )
    )
    sample = subsample(paths["test"], workdir / f"sample-{args.docs}.tsv", args.docs)
    seen = training_counts(projects.get("llm_rank"), paths["train"])
    print(f"{name}: evaluating on {args.docs} documents of {paths['test'].name}")
    rows = []
    for project_id in baselines:
        project = projects.get(project_id)
        if args.retrain or not project.is_trained:
            project.train([paths["train"]])
        rows.append(evaluated_row(name, project_id, project, sample, seen))
        print(rows[-1], flush=True)

    project = projects.get("llm_rank")
    with Timer() as train:
        info = project.train([paths["train"]])
    print(
        {k: v for k, v in info.items() if k != "learned"},
        "weights",
        info.get("learned"),
        flush=True,
    )
    docs = list(project.corpus([sample]))
    backend = project.backend
    backend._ensure_loaded()
    with Timer() as run:
        analyses = backend.analyse([d.text for d in docs], progress=True)
    for row in evaluate_modes(
        project, analyses, [d.subjects for d in docs], seen, name, run.seconds
    ):
        row["train_s"] = round(train.seconds, 1)
        rows.append(row)
        print(row, flush=True)
    speed = timing(backend, [d.text for d in docs[: args.timing_docs]])
    speed["calibration_docs"] = info["calibration_documents"]
    speed["truncated_docs"] = sum(a.truncated for a in analyses)
    speed["judged_per_doc"] = round(sum(a.judged for a in analyses) / len(docs), 1)
    speed["llm_s_per_doc"] = round(sum(a.llm_seconds for a in analyses) / len(docs), 3)
    speed["model"] = backend._lm.identity
    speed["max_rss_mb"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return rows, speed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets", default="archaeology,kirjastonhoitaja,gnd-tibkat-en"
    )
    parser.add_argument("--docs", type=int, default=100, help="test documents")
    parser.add_argument("--calibration-docs", type=int, default=100)
    parser.add_argument("--timing-docs", type=int, default=3)
    parser.add_argument("--candidates", type=int, default=30)
    parser.add_argument("--few-shot", type=int, default=0)
    parser.add_argument("--max-doc-tokens", type=int, default=0, help="0: default")
    parser.add_argument("--model", default="", help="LLM (default: per language)")
    parser.add_argument("--baselines", default="lexical,embed")
    parser.add_argument(
        "--retrain", action="store_true", help="retrain trained baselines"
    )
    args = parser.parse_args()
    args.baselines = [b for b in args.baselines.split(",") if b]
    rows, speed = [], {}
    for name in args.datasets.split(","):
        dataset_rows, speed[name] = bench(name, args)
        rows += dataset_rows
        print(name, speed[name], flush=True)
    print(
        f"\nEach dataset: {args.docs} test documents (lowest md5 of the line), "
        f"calibration on {args.calibration_docs} held-out training documents."
    )
    print(markdown_table(rows, [*METRIC_COLUMNS, "candidate_recall"]))
    speed_rows = [{"dataset": k, **v} for k, v in speed.items()]
    columns = [
        "dataset",
        "suffix_tokens",
        "candidates_per_doc",
        *(
            f"{n}_{k}"
            for n in TIMINGS
            for k in ("prefix_tokens", "judged_per_doc", "llm_s_per_doc")
        ),
        "default_s_per_doc",
    ]
    print(markdown_table(speed_rows, columns))
    # datasets run separately accumulate in one results file
    previous = RESULTS / "llm_rank.json"
    old = json.loads(previous.read_text()) if previous.is_file() else {}
    rows = [r for r in old.get("rows", []) if r["dataset"] not in speed] + rows
    settings = {**old.get("settings", {}), **{n: vars(args) for n in speed}}
    speed = {**old.get("speed", {}), **speed}
    save_results("llm_rank", {"rows": rows, "speed": speed, "settings": settings})


if __name__ == "__main__":
    main()
