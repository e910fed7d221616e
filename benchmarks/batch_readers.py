"""Batch-indexing input readers: Parquet against JSONL of the same records.

    python benchmarks/batch_readers.py [--rows 1000000] [--block-size 1000]
        [--blocks N] [--end-to-end]

Writes `--rows` records (`id`, `text` of 12 words) as JSONL and as Parquet with
pyarrow's default row groups (one row group up to 1Mi rows), then reads every
block of each the way a worker does (`readers.scan`, then `readers.read_block`
block after block) and prints, per format: documents/s, and for Parquet the
rows pyarrow decoded per row read (1.0: each row once; a reader that decodes
its block's whole row group decodes rows/block_size times as many). `--blocks
N` reads only the first N blocks (to time a slow reader). `--end-to-end` also
times `indexer index` with the `dummy` backend (suggests one fixed subject, so
the reading and writing are what is measured), with -j 1.

Run it against another checkout with PYTHONPATH=that/checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = [
    "stars", "telescope", "galaxies", "astronomy", "physics", "particles", "quantum",
    "motion", "cells", "genes", "biology", "music", "orchestra", "history",
    "archives", "libraries", "catalogue", "subject", "indexing", "vocabulary",
    "concepts", "records", "texts", "documents",
]  # fmt: skip


def write_inputs(directory: Path, rows: int) -> tuple[Path, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(0)
    ids = [f"d{n}" for n in range(rows)]
    texts = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(rows)]
    jsonl = directory / "records.jsonl"
    with open(jsonl, "w", encoding="utf-8") as f:
        for record_id, text in zip(ids, texts, strict=True):
            f.write(json.dumps({"id": record_id, "text": text}) + "\n")
    parquet = directory / "records.parquet"
    pq.write_table(pa.table({"id": ids, "text": texts}), parquet)  # default groups
    return jsonl, parquet


def count_decoded_rows() -> list[int]:
    """Rows pyarrow decodes from now on, whichever way the reader asks."""
    import pyarrow.parquet as pq

    decoded = [0]
    iter_batches = pq.ParquetFile.iter_batches
    read_row_group = pq.ParquetFile.read_row_group

    def counted_batches(self, *args, **kwargs):
        for batch in iter_batches(self, *args, **kwargs):
            decoded[0] += batch.num_rows
            yield batch

    def counted_group(self, *args, **kwargs):
        table = read_row_group(self, *args, **kwargs)
        decoded[0] += table.num_rows
        return table

    pq.ParquetFile.iter_batches = counted_batches
    pq.ParquetFile.read_row_group = counted_group
    return decoded


def read_all(path: Path, block_size: int, blocks: int | None) -> dict:
    from indexer.batch.readers import read_block, scan
    from indexer.batch.records import Options

    started = time.perf_counter()
    specs = list(scan(path, block_size, 0))[:blocks]
    records = sum(len(read_block(spec, Options())) for spec in specs)
    seconds = time.perf_counter() - started
    return {"records": records, "seconds": seconds, "docs_per_s": records / seconds}


def index_end_to_end(path: Path, workdir: Path) -> float:
    """Documents/s of `indexer index dummy PATH`, process start included."""
    root = Path(__file__).resolve().parents[1]
    config = workdir / "projects.cfg"
    config.write_text(
        f"[vocab:tiny]\nsource = {root}/tests/data/tiny.ttl\n\n"
        "[dummy]\nlanguage = en\nvocab = tiny\nbackend = dummy\n"
        "uri = http://example.org/t/physics\n"
    )
    out = workdir / f"out-{path.suffix[1:]}.jsonl"
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "indexer", "--projects", str(config), "index",
         "dummy", str(path), "--output", str(out), "--force"],
        check=True, cwd=workdir, env={**os.environ, "TQDM_DISABLE": "1"},
    )  # fmt: skip
    seconds = time.perf_counter() - started
    with open(out, "rb") as f:
        rows = sum(1 for _ in f)
    return rows / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--block-size", type=int, default=1000)
    parser.add_argument("--blocks", type=int, help="read only the first N blocks")
    parser.add_argument("--end-to-end", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        jsonl, parquet = write_inputs(workdir, args.rows)
        import pyarrow.parquet as pq

        groups = pq.ParquetFile(parquet).metadata.num_row_groups
        print(f"{args.rows} records, Parquet in {groups} row group(s), "
              f"blocks of {args.block_size}")  # fmt: skip
        decoded = count_decoded_rows()
        results = {}
        for name, path in (("jsonl", jsonl), ("parquet", parquet)):
            decoded[0] = 0
            results[name] = read_all(path, args.block_size, args.blocks)
            results[name]["decoded_per_row"] = decoded[0] / results[name]["records"]
        print("| input | records read | seconds | documents/s | rows decoded/row |")
        print("|---|---:|---:|---:|---:|")
        for name, r in results.items():
            per_row = f"{r['decoded_per_row']:.2f}" if name == "parquet" else "-"
            print(f"| {name} | {r['records']} | {r['seconds']:.2f} | "
                  f"{r['docs_per_s']:,.0f} | {per_row} |")  # fmt: skip
        if args.end_to_end:
            for name, path in (("jsonl", jsonl), ("parquet", parquet)):
                rate = index_end_to_end(path, workdir)
                print(f"indexer index (dummy, -j 1) from {name}: {rate:,.0f} docs/s")


if __name__ == "__main__":
    main()
