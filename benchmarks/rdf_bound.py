"""How long hostile and real vocabulary files take to load, against the budget.

    python benchmarks/rdf_bound.py [--old /path/to/old/checkout] [--cap 60]

Each measurement runs `indexer.skos.read_vocabulary_file` in a fresh Python
process on a checkout (this one, and with --old another one, to compare), and
prints the seconds it took (without the interpreter's own start) and what came
of it: the number of concepts or the first words of the error. A run over
--cap seconds is killed and printed as "> CAP s".

1. Single-literal files: one concept whose label is one literal of line breaks
   ("a\\n" repeated), 1 MB and 10 MB, as RDF/XML and Turtle. rdflib takes time
   superlinear in such a literal's length and yields no triple meanwhile, so a
   budget checked as triples arrive could not stop it; each is loaded with a
   5 s budget and with the default one (INDEXER_VOCAB_MAX_SECONDS unset).
2. In-process worst case: the same literal at 32 to 256 KiB parsed in this
   process (what `indexer.rdfsafe.IN_PROCESS_BYTES` relies on).
3. Vocabularies: tests/data/tiny.ttl and the real ones in the shared datasets
   (--vocabs), each with the default budgets, the fastest of --repeat loads
   (old and new taking turns, as the machine's load may change).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("INDEXER_DATASETS", ROOT.parent / "shared" / "datasets"))
SKOS = "http://www.w3.org/2004/02/skos/core#"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"

MEASURE = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from indexer.errors import InputError
from indexer.skos import read_vocabulary_file
started = time.perf_counter()
try:
    outcome = f"{len(read_vocabulary_file(sys.argv[2]))} concepts"
except InputError as exc:
    outcome = exc.message.replace(sys.argv[2], "FILE")
seconds = time.perf_counter() - started
rss = [resource.getrusage(who).ru_maxrss // 1024
       for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
print(json.dumps({"seconds": seconds, "outcome": outcome, "rss": rss}))
"""


def literal_rdfxml(size: int) -> bytes:
    head = (
        f'<?xml version="1.0"?>\n<rdf:RDF xmlns:rdf="{RDF}" xmlns:skos="{SKOS}">\n'
        '<skos:Concept rdf:about="http://example.org/x/1"><skos:prefLabel>'
    )
    tail = "</skos:prefLabel></skos:Concept></rdf:RDF>\n"
    return (head + "a\n" * ((size - len(head) - len(tail)) // 2) + tail).encode()


def literal_turtle(size: int) -> bytes:
    head = (
        f"@prefix skos: <{SKOS}> .\n"
        '<http://example.org/x/1> a skos:Concept ; skos:prefLabel """'
    )
    tail = '""" .\n'
    return (head + "a\n" * ((size - len(head) - len(tail)) // 2) + tail).encode()


def measure(tree: Path, source: Path, cap: float, seconds: str | None) -> dict:
    """One load of `source` with the code in `tree`, in a fresh process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDEXER_VOCAB_")}
    if seconds is not None:
        env["INDEXER_VOCAB_MAX_SECONDS"] = seconds
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", MEASURE, str(tree), str(source)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tempfile.gettempdir(),
        start_new_session=True,  # its own process group, parse children and all
    )
    try:
        out, err = proc.communicate(timeout=cap)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"seconds": None, "outcome": f"killed by the benchmark after {cap:g} s"}
    if proc.returncode != 0:
        last = (err.strip().splitlines() or ["?"])[-1]
        return {"seconds": time.perf_counter() - started, "outcome": f"crash: {last}"}
    return json.loads(out.strip().splitlines()[-1])


def show(result: dict, cap: float) -> str:
    took = result["seconds"]
    text = f"> {cap:g} s" if took is None else f"{took:7.2f} s"
    rss = result.get("rss")
    memory = f"  (peak RSS {rss[0]} MB, parser child {rss[1]} MB)" if rss else ""
    return f"{text}  {result['outcome'][:90]}{memory}"


def in_process_worst_case() -> None:
    sys.path.insert(0, str(ROOT))
    from indexer.rdfsafe import IN_PROCESS_BYTES, parse_graph

    print(f"\n2. in-process worst case (IN_PROCESS_BYTES = {IN_PROCESS_BYTES})")
    parse_graph(literal_turtle(1000), "turtle", Path("warm-up.ttl"))
    for kib in (32, 64, 128, 256):
        for name, make, fmt in (
            ("RDF/XML", literal_rdfxml, "xml"),
            ("Turtle", literal_turtle, "turtle"),
        ):
            data = make(kib * 1024)
            started = time.perf_counter()
            parse_graph(data, fmt, Path("literal"))
            took = time.perf_counter() - started
            print(f"   {name:8} literal of line breaks, {kib:3} KiB: {took:6.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", type=Path, help="another checkout to compare")
    parser.add_argument("--cap", type=float, default=60, help="seconds per run")
    parser.add_argument("--sizes", default="1,10", help="MB of the literal files")
    parser.add_argument(
        "--old-sizes", default="1", help="the literal files --old loads too"
    )
    parser.add_argument("--repeat", type=int, default=3, help="loads per vocabulary")
    parser.add_argument("--skip-literals", action="store_true", help="only 2. and 3.")
    parser.add_argument(
        "--vocabs",
        default="gnd-tibkat,yso-kirjastonhoitaja,stw",
        help="shared datasets whose vocab.ttl to load ('' for none)",
    )
    args = parser.parse_args()
    trees = [("new", ROOT)] + ([("old", args.old.resolve())] if args.old else [])

    if not args.skip_literals:
        literal_files(args, trees)
    in_process_worst_case()

    print("\n3. vocabularies (default budgets)")
    sources = [ROOT / "tests" / "data" / "tiny.ttl"]
    sources += [DATASETS / n / "vocab.ttl" for n in args.vocabs.split(",") if n]
    for source in sources:
        if not source.is_file():
            print(f"   {source}: not available")
            continue
        size = source.stat().st_size / 2**20
        cap = max(args.cap, 600)
        runs = {label: [] for label, _ in trees}
        for _ in range(args.repeat):
            for label, tree in trees:
                runs[label].append(measure(tree, source, cap, None))
        for label, results in runs.items():
            done = [r for r in results if r["seconds"] is not None]
            best = min(done, key=lambda r: r["seconds"]) if done else results[0]
            each = ", ".join(f"{r['seconds']:.2f}" for r in done)
            print(
                f"   {label} {source.parent.name}/{source.name} ({size:.1f} MB): "
                f"{show(best, cap)} [{each}]",
                flush=True,
            )


def literal_files(args, trees) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        print("1. single-literal files (5 s budget and the default, 1800 s)")
        for megabytes in (float(x) for x in args.sizes.split(",")):
            for name, make, suffix in (
                ("RDF/XML", literal_rdfxml, "rdf"),
                ("Turtle", literal_turtle, "ttl"),
            ):
                source = Path(tmp) / f"literal-{megabytes:g}MB.{suffix}"
                source.write_bytes(make(int(megabytes * 2**20)))
                old_too = f"{megabytes:g}" in args.old_sizes.split(",")
                for budget in ("5", None):
                    for label, tree in trees if old_too else trees[:1]:
                        result = measure(tree, source, args.cap, budget)
                        print(
                            f"   {label} {name:8} {megabytes:4g} MB, budget "
                            f"{budget or 'default'}: {show(result, args.cap)}",
                            flush=True,
                        )


if __name__ == "__main__":
    main()
