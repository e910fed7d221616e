"""F1@5 of the xmc layouts `flat` and `bonsai`, their training time, and which
of them the default `preset = auto` picks, on real datasets: trained on 80% of
each dataset's train split and evaluated on another 10% of it (split by the
md5 of each line; never the test files).

    nice -n 10 python benchmarks/xmc_layouts.py [--datasets kirjastonhoitaja]
        [--presets flat,bonsai,balanced]

Prints a markdown table; writes benchmarks/results/xmc_layouts.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    DATASETS,
    DATASETS_SPEC,
    evaluate,
    markdown_table,
    save_results,
    split_lines,
    training_counts,
    write_config,
)

PRESETS = ["flat", "bonsai"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="kirjastonhoitaja,archaeology")
    parser.add_argument("--presets", default=",".join(PRESETS))
    args = parser.parse_args()
    presets = args.presets.split(",")
    from backends.xmc import choose_layout
    from indexer.project import Projects

    rows = []
    for name in args.datasets.split(","):
        vocab, language, train, _ = DATASETS_SPEC[name]
        work = Path(tempfile.mkdtemp(prefix="xmc-layouts-"))
        split = split_lines(DATASETS / train, work)  # train / tune / test parts
        sections = {
            p: {"language": language, "backend": "xmc", "preset": p} for p in presets
        }
        projects = Projects.from_path(
            write_config(work, "v", DATASETS / vocab, sections)
        )
        for preset in presets:
            project = projects.get(preset)
            started = time.perf_counter()
            info = project.train([split["train"]])
            seconds = time.perf_counter() - started
            seen = training_counts(project, split["train"])
            metrics, _, documents = evaluate(project, split["tune"], seen)
            auto = choose_layout("auto", info["examples"], info["subjects"])
            rows.append(
                {
                    "dataset": name,
                    "layout": preset,
                    "auto picks": auto,
                    "documents x subjects": info["examples"] * info["subjects"],
                    "train s": round(seconds, 1),
                    "F1@5": round(metrics["f1@5"], 4),
                    "evaluated": documents,
                }
            )
            print(rows[-1], file=sys.stderr, flush=True)
    save_results("xmc_layouts", rows)
    print(markdown_table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
