"""Set up in every Ray worker of tests/batch/test_ray_training.py (its cluster's
`worker_process_setup_hook`): each training of a source for a fold is logged
to `trainings.log` in the folder HOOKS_ENV names, as "FOLD SOURCE"; when the
folder holds `fail.json` ({"fold": F, "source": S, "how": "crash"|"raise"}),
that training kills its worker, as running out of memory would, or raises.
`running.log` gets "+" as a training starts and "-" as it ends."""

from __future__ import annotations

import json
import os
from pathlib import Path

HOOKS_ENV = "INDEXER_TEST_TRAINING_HOOKS"


def install() -> None:
    from indexer.backend import Backend

    train_part = Backend.train_part

    def logged_or_failing(self, corpus, directory, jobs=1):
        folder = Path(os.environ[HOOKS_ENV])
        # the cross-fit trains a source for fold F in `fold-F-SOURCE`
        fold = int(Path(directory).name.split("-")[1])
        with open(folder / "trainings.log", "a") as log:
            log.write(f"{fold} {self.project.id}\n")
        running = folder / "running.log"  # "+" as a training starts, "-" as it ends
        _append(running, "+")
        try:
            fail = json.loads((folder / "fail.json").read_text())
        except FileNotFoundError:
            fail = None
        try:
            if fail and (fail["fold"], fail["source"]) == (fold, self.project.id):
                if fail["how"] == "crash":
                    _append(running, "-")
                    os._exit(1)
                raise ValueError(f"{self.project.id} cannot train on fold {fold}")
            return train_part(self, corpus, directory, jobs)
        finally:
            _append(running, "-")

    Backend.train_part = logged_or_failing


def _append(path: Path, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")
