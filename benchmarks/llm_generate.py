"""Generate-then-map (llm_generate) with the packaged SmolLM2-135M-Instruct,
in this process (engine = local) and behind `transformers serve` started by
this script (engine = chat), beside zero-shot `lexical` on the same
documents:

1. kirjastonhoitaja validate: the `--docs` documents with the lowest md5 of
   their line (deterministic), F1@5, nDCG@10, recall@10 of the subjects
   unseen in train.tsv, and seconds per document. SmolLM2 is English, so it
   is asked in English (`--prompt-language`) and its terms are matched to
   YSO's English labels with MiniLM (`--label-language`, `--embed-model`):
   the Finnish prompt and labels are one setting away.
2. The demo vocabulary (vocabularies/disciplines.ttl) and the example texts
   of vocabularies/examples: the suggestions, the terms behind them and the
   seconds per document (there are no gold subjects to score).

    python benchmarks/llm_generate.py [--docs 50] [--engines local,chat]
        [--max-new-tokens 96] [--calibration-docs 0] [--skip-demo]

The backend is zero-shot (hand-set weights) unless `--calibration-docs N`
fits its weights on N training documents first (N more generations per
engine). Writes benchmarks/results/llm_generate.json.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from common import (  # noqa: E402
    RESULTS,
    Timer,
    dataset_paths,
    evaluated_row,
    markdown_table,
    save_results,
    training_counts,
)
from llm_rank import subsample, write_config  # noqa: E402

from indexer.project import Projects  # noqa: E402
from tests.model_servers import transformers_serve  # noqa: E402

COLUMNS = ["backend", "f1@5", "ndcg", "recall@10", "unseen_recall@10", "s/doc"]
DEMO_VOCAB = ROOT / "vocabularies" / "disciplines.ttl"
EXAMPLES = sorted((ROOT / "vocabularies" / "examples").glob("*.txt"))


def generate_settings(args, engine: str, url: str, language: str) -> dict:
    settings = {
        "language": language,
        "backend": "llm_generate",
        "max_new_tokens": args.max_new_tokens,
        "calibration_docs": max(args.calibration_docs, 1),
        "prompt_language": args.prompt_language,
        "label_language": args.label_language,
        "embed_model": args.embed_model,
    }
    if engine == "local":
        return {**settings, "model": "smollm2", "dtype": "float32"}
    # a CPU server answers one long generation after another: wait for it
    chat = {"engine": "chat", "url": url, "model": args.model_path}
    return {**settings, **chat, "timeout": 900, "concurrency": 2}


def served(args):
    """`transformers serve` with SmolLM2, when the chat engine is asked for."""
    if "chat" not in args.engines:
        return contextlib.nullcontext("")
    return transformers_serve(Path(args.model_path), timeout=300)


def kirjastonhoitaja(args, url: str) -> list[dict]:
    workdir = RESULTS / "work" / "llm_generate-kirjastonhoitaja"
    workdir.mkdir(parents=True, exist_ok=True)
    paths = dataset_paths("kirjastonhoitaja", workdir)
    language = paths["language"]
    sections = {
        "lexical": {"language": language, "backend": "lexical"},
        **{
            f"llm_generate-{engine}": generate_settings(args, engine, url, language)
            for engine in args.engines
        },
    }
    projects = Projects.from_path(
        write_config(
            workdir / "projects.cfg", workdir / "data", paths["vocab"], sections
        )
    )
    sample = subsample(paths["test"], workdir / f"sample-{args.docs}.tsv", args.docs)
    seen = training_counts(projects.get("lexical"), paths["train"])
    print(f"kirjastonhoitaja: {args.docs} documents of {paths['test'].name}")
    rows = []
    for project_id in sections:
        project = projects.get(project_id)
        info = {}
        if project_id != "lexical":
            project.backend._ensure_loaded()  # the concept index, the model
            if args.calibration_docs:
                train = subsample(
                    paths["train"], workdir / "calibration.tsv", args.calibration_docs
                )
                info = project.train([train])
                project.unload()
        row = evaluated_row("kirjastonhoitaja", project_id, project, sample, seen)
        row["s/doc"] = round(row["ms/doc"] / 1000, 2)
        if info:
            row["calibration_s"] = round(info["seconds"], 1)
        rows.append(row)
        print({k: v for k, v in row.items() if k in COLUMNS}, flush=True)
    return rows


def demo(args, url: str) -> list[dict]:
    workdir = RESULTS / "work" / "llm_generate-demo"
    workdir.mkdir(parents=True, exist_ok=True)
    sections = {
        f"demo-{engine}": generate_settings(args, engine, url, "en")
        for engine in args.engines
    }
    for settings in sections.values():  # the demo's own language and encoder
        for key in ("prompt_language", "label_language", "embed_model"):
            settings.pop(key)
    projects = Projects.from_path(
        write_config(workdir / "projects.cfg", workdir / "data", DEMO_VOCAB, sections)
    )
    texts = [path.read_text(encoding="utf-8") for path in EXAMPLES]
    out = []
    for project_id in sections:
        project = projects.get(project_id)
        project.backend._ensure_loaded()
        with Timer() as t:
            batch = project.suggest(texts, limit=8)
        for path, text, row in zip(EXAMPLES, texts, batch, strict=True):
            why = project.backend.explain(text, [s.subject for s in row])
            analysis = project.backend._recent[text]
            suggestions = [
                {
                    "label": project.vocab.label(s.subject, "en"),
                    "score": round(s.score, 3),
                    "terms": [t["term"] for t in why[s.subject]["terms"]],
                    "match": sorted({t["match"] for t in why[s.subject]["terms"]}),
                }
                for s in row
            ]
            out.append(
                {
                    "project": project_id,
                    "text": path.name,
                    "answer": analysis.answer,
                    "terms": analysis.terms,
                    "suggestions": suggestions,
                    "s/doc": round(t.seconds / len(texts), 2),
                }
            )
            print(f"\n{project_id} {path.name}: terms {analysis.terms}")
            for s in suggestions:
                print(f"  {s['score']:.3f} {s['label']} <- {s['terms']} {s['match']}")
        print(f"{project_id}: {t.seconds / len(texts):.1f} s/doc", flush=True)
    return out


def main() -> None:
    from indexer.neural.models import resolve_model

    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=50)
    parser.add_argument("--engines", default="local,chat")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--calibration-docs", type=int, default=0)
    parser.add_argument("--prompt-language", default="en")
    parser.add_argument("--label-language", default="en")
    parser.add_argument("--embed-model", default="minilm")
    parser.add_argument("--skip-demo", action="store_true")
    args = parser.parse_args()
    args.engines = args.engines.split(",")
    args.model_path = resolve_model("smollm2").path
    started = time.perf_counter()
    results: dict = {"settings": {k: v for k, v in vars(args).items()}}
    with served(args) as url:
        results["kirjastonhoitaja"] = kirjastonhoitaja(args, url)
        save_results("llm_generate", results)
        if not args.skip_demo:
            results["demo"] = demo(args, url)
    results["seconds"] = round(time.perf_counter() - started, 1)
    print(f"\n{markdown_table(results['kirjastonhoitaja'], COLUMNS)}")
    print(f"\nwrote {save_results('llm_generate', results)}")


if __name__ == "__main__":
    main()
