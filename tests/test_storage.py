from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import scipy.sparse as sp

from indexer.locking import ResourceLock
from indexer.storage import (
    atomic_directory,
    load_arrays,
    read_manifest,
    remove_directory,
    save_arrays,
)

from .conftest import DATA


def _lock(tmp_path):
    return ResourceLock(tmp_path.parent / f"{tmp_path.name}.lock", "The model")


def test_atomic_directory_replaces_old_content(tmp_path):
    target = tmp_path / "model"
    with atomic_directory(target, _lock(tmp_path)) as d:
        (d / "a.txt").write_text("one")
    with atomic_directory(target, _lock(tmp_path)) as d:
        (d / "a.txt").write_text("two")
    assert (target / "a.txt").read_text() == "two"
    assert len(list(tmp_path.iterdir())) == 2  # the link and one version


def test_failed_write_keeps_the_old_version(tmp_path):
    target = tmp_path / "model"
    with atomic_directory(target, _lock(tmp_path)) as d:
        (d / "a.txt").write_text("one")
    with pytest.raises(RuntimeError), atomic_directory(target, _lock(tmp_path)) as d:
        (d / "a.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert (target / "a.txt").read_text() == "one"
    assert remove_directory(target, _lock(tmp_path)) and not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_arrays_round_trip_without_pickle(tmp_path):
    m = sp.random(5, 7, density=0.3, format="csr", dtype=np.float32, random_state=0)
    save_arrays(tmp_path / "a.npz", {"m": m, "v": np.arange(3)})
    loaded = load_arrays(tmp_path / "a.npz")
    assert (loaded["m"] != m).nnz == 0
    np.testing.assert_array_equal(loaded["v"], np.arange(3))


SLOW_TRAIN = """
import sys, time
from pathlib import Path
from backends.tfidf import TfidfBackend
from indexer.project import Projects

original = TfidfBackend._train
def slow_train(self, corpus, directory, jobs):
    info = original(self, corpus, directory, jobs)
    Path(directory, "centroids.npz").write_bytes(b"half-written")
    print("writing", flush=True)
    time.sleep(60)
    return info
TfidfBackend._train = slow_train
Projects.from_path(sys.argv[1]).get("tfidf-en").train([sys.argv[2]])
"""


def test_kill_during_training_leaves_the_previous_model_usable(workspace, projects):
    project = projects.get("tfidf-en")
    project.train([DATA / "tiny.tsv"])
    before = project.suggest(["telescopes"]).matrix.toarray()
    script = workspace / "slow.py"
    script.write_text(textwrap.dedent(SLOW_TRAIN))
    proc = subprocess.Popen(
        [
            sys.executable,
            str(script),
            str(workspace / "projects.cfg"),
            str(DATA / "fulltext"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(0.1)
    project.unload()
    assert read_manifest(project.model_dir)["documents"] == 10
    np.testing.assert_array_equal(
        project.suggest(["telescopes"]).matrix.toarray(), before
    )
    project.train([DATA / "fulltext"])  # the next training cleans up the leftovers
    assert len(list(project.model_dir.parent.iterdir())) == 2


def test_parallel_map_keeps_order():
    from indexer.parallel import parallel_map

    items = list(range(300))
    assert parallel_map(lambda x: x * x, items, jobs=2, chunksize=8) == [
        x * x for x in items
    ]
    assert parallel_map(str, [1, 2], jobs=4) == ["1", "2"]


def test_publishing_removes_only_published_siblings(tmp_path):
    """Removing the caches of older versions removed every folder beside the
    new one: a folder a user kept there, or, when the parent is a symlink
    (caches moved to another disk), whatever the target folder held."""
    import time

    import numpy as np

    from indexer.storage import publish_mappable

    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "keep").mkdir(parents=True)
    (elsewhere / "keep" / "file").write_text("mine")
    (tmp_path / "project").mkdir()
    caches = tmp_path / "project" / "cache"
    caches.symlink_to(elsewhere)
    arrays = {"a": np.arange(3)}
    publish_mappable(caches / "old", arrays, {"v": 1})
    stale_work = elsewhere / ".old.0123456789ab"
    stale_work.mkdir()
    hour_ago = time.time() - 7200
    os.utime(stale_work, (hour_ago, hour_ago))
    publish_mappable(caches / "new", arrays, {"v": 2}, remove_siblings=True)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["keep", "new"]
    assert (elsewhere / "keep" / "file").read_text() == "mine"


@pytest.mark.parametrize("planted", ["file", "symlink"])
def test_publishing_replaces_a_file_or_link_in_its_place(tmp_path, planted):
    """A file or a symlink where the directory goes was renamed aside and left
    there for good (rmtree removes neither); the link's target is kept."""
    import numpy as np

    from indexer.storage import open_mappable, publish_mappable

    target = tmp_path / "target"
    target.mkdir()
    (target / "file").write_text("theirs")
    caches = tmp_path / "caches"
    caches.mkdir()
    path = caches / "index"
    if planted == "file":
        path.write_text("junk")
    else:
        path.symlink_to(target)
    publish_mappable(path, {"a": np.arange(3)}, {"v": 1})
    assert [p.name for p in caches.iterdir()] == ["index"]
    assert open_mappable(path, {"v": 1})["a"].tolist() == [0, 1, 2]
    assert (target / "file").read_text() == "theirs"
