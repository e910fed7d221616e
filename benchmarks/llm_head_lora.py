"""llm_head fine-tuned with LoRA on a real corpus, beside its frozen mode,
tfidf and xmc, and in the calibrated fusion with and without it.

    python benchmarks/llm_head_lora.py [--dataset kirjastonhoitaja]
        [--model gemma-3-270m] [--max-length 128] [--epochs 3]
        [--modes frozen,lora] [--probe-epochs 0] [--device auto] [--no-fusion]
        [--variants] [--state-variants] [--all-subjects] [--tag TAG]

Protocol (the evaluation split is never used for training or tuning):

- train is split by the md5 of each line into fit (85%) and tune (15%); every
  backend trains on fit (llm_head holds out 10% of fit for its per-epoch
  validation and early stopping), the calibrated fusions are fitted on tune;
- every row is evaluated on the dataset's validate split.

`--variants` trains more frozen heads on the same cached states (head type,
loss, label-text initialisation): cheap comparisons of what helps a small
decoder classify. `--state-variants` (last-token pooling, the plain text
without the PromptEOL template) each need one more pass of the decoder over
the corpus, `--all-subjects` one over every label of the vocabulary.

Prints a markdown table and the LoRA training curve (seconds per epoch, peak
memory); writes benchmarks/results/llm_head_lora-<dataset>[-TAG].json. Models stay in
benchmarks/results/work/llm_head_lora-<dataset>.
"""

from __future__ import annotations

import argparse
import resource
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

from indexer.project import Projects  # noqa: E402

SOURCES = ["tfidf", "lexical", "xmc"]
# frozen heads on the same cached states: (project id suffix, settings)
VARIANTS = [
    ("mlp-1024", {"head_hidden": 1024}),
    ("focal", {"loss": "focal"}),
    ("asymmetric", {"loss": "asymmetric"}),
    ("smoothing-0.1", {"label_smoothing": 0.1}),
    ("label-init", {"head_init": "labels"}),
]
# frozen heads that need states of their own (one more pass over the corpus)
STATE_VARIANTS = [
    ("last-token", {"pooling": "last"}),
    ("plain-text", {"template": "{text}"}),
]
# every subject of the vocabulary, rows from label states (one pass over labels)
ALL_SUBJECTS = ("vocabulary", {"labels": "vocabulary", "head_init": "labels"})


def peak_memory_mb() -> dict:
    """Peak resident memory of this process and, on CUDA, of the GPU."""
    import torch

    peak = {"rss": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    if torch.cuda.is_available():
        peak["cuda"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return peak


def project_settings(args, language: str) -> dict[str, dict]:
    llm = {
        "language": language,
        "backend": "llm_head",
        "model": args.model,
        "max_length": args.max_length,
        "truncation": "head_tail",
        "device": args.device,
    }
    settings = {s: {"language": language, "backend": s} for s in SOURCES}
    for mode in args.modes.split(","):
        extra = {}
        if mode != "frozen":
            extra = {"epochs": args.epochs, "probe_epochs": args.probe_epochs}
        settings[f"llm_head-{mode}"] = {**llm, "mode": mode, **extra}
    variants = (
        (VARIANTS if args.variants else [])
        + (STATE_VARIANTS if args.state_variants else [])
        + ([ALL_SUBJECTS] if args.all_subjects else [])
    )
    for name, variant in variants:
        settings[f"llm_head-frozen.{name}"] = {**llm, "mode": "frozen", **variant}
    if not args.no_fusion:
        settings["calibrated"] = {
            "language": language,
            "backend": "calibrated",
            "sources": ", ".join(SOURCES),
        }
        for mode in args.modes.split(","):
            settings[f"calibrated.llm_head-{mode}"] = {
                "language": language,
                "backend": "calibrated",
                "sources": ", ".join([*SOURCES, f"llm_head-{mode}"]),
            }
    return settings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="kirjastonhoitaja")
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--modes", default="frozen,lora")
    parser.add_argument(
        "--probe-epochs", type=int, default=0, help="LoRA: head-only epochs first"
    )
    parser.add_argument("--tag", default="", help="suffix of the results file")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-fusion", action="store_true")
    parser.add_argument("--variants", action="store_true", help="frozen heads")
    parser.add_argument(
        "--state-variants", action="store_true", help="last-token pooling, plain text"
    )
    parser.add_argument(
        "--all-subjects", action="store_true", help="a head over the vocabulary"
    )
    args = parser.parse_args()

    workdir = RESULTS / "work" / f"llm_head_lora-{args.dataset}"
    workdir.mkdir(parents=True, exist_ok=True)
    paths = dataset_paths(args.dataset, workdir)
    part = split_lines(paths["train"], workdir, parts=(("fit", 17), ("tune", 3)))
    settings = project_settings(args, paths["language"])
    if args.no_fusion:
        settings.pop("lexical")
    projects = Projects.from_path(
        write_config(workdir, "vocab", paths["vocab"], settings)
    )
    trained = [p for p, s in settings.items() if s["backend"] != "calibrated"]
    fusions = [p for p, s in settings.items() if s["backend"] == "calibrated"]

    info: dict = {"args": vars(args), "train_s": {}, "peak_memory_mb": {}}
    for project_id in trained:
        with Timer() as t:
            result = projects.get(project_id).train([part["fit"]])
        info["train_s"][project_id] = round(t.seconds, 1)
        info["peak_memory_mb"][project_id] = peak_memory_mb()
        if project_id.startswith("llm_head"):
            keep = ("epochs_run", "best_epoch", "history", "feature_seconds", "probe")
            info[project_id] = {k: result[k] for k in keep if k in result}
        print(f"trained {project_id} in {t.seconds:.0f} s", flush=True)
    for project_id in fusions:
        with Timer() as t:
            projects.get(project_id).train([part["tune"]])
        info["train_s"][project_id] = round(t.seconds, 1)
        print(f"fitted {project_id} in {t.seconds:.0f} s", flush=True)

    seen = training_counts(projects.get(trained[0]), part["fit"])
    rows = []
    for project_id in trained + fusions:
        rows.append(
            evaluated_row(
                args.dataset,
                project_id,
                projects.get(project_id),
                paths["test"],
                seen,
                batch_size=16,
                train_s=info["train_s"][project_id],
            )
        )
        print(
            {k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()}
        )
    info["peak_memory_mb"]["all"] = peak_memory_mb()
    columns = [c for c in METRIC_COLUMNS if c != "precision@5"] + ["train_s"]
    print(markdown_table(rows, columns))
    for project_id in trained:
        for row in info.get(project_id, {}).get("history", []):
            print(project_id, row)
    save_results(
        f"llm_head_lora-{args.dataset}", {"rows": rows, "info": info}, args.tag
    )


if __name__ == "__main__":
    main()
