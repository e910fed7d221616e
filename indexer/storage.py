"""Model and vocabulary directories that are replaced atomically.

`path` is a symbolic link to a versioned sibling directory. New content is
written into a fresh directory and the link is swapped with one `rename`, so a
crash or kill -9 at any moment leaves either the old or the new version whole.
Every writer holds the resource's lock (`indexer.locking`) while it writes, so
the work directories left by killed writers are removed only while no one else
can be writing one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from indexer.locking import ResourceLock

MANIFEST = "manifest.json"


@contextmanager
def atomic_directory(
    path: Path, lock: ResourceLock, wait: bool = False
) -> Iterator[Path]:
    """Yield an empty directory; on success it replaces `path` in one step.

    `lock` is held throughout (re-entrant: callers that already hold it keep
    it); a lock held by someone else raises BusyError, or is waited for."""
    path = Path(path)
    with lock.hold(wait=wait):
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(path)
        version = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}"
        version.mkdir()
        try:
            yield version
        except BaseException:
            shutil.rmtree(version, ignore_errors=True)
            raise
        _swap(path, version)


def _swap(path: Path, version: Path) -> None:
    previous = path.resolve() if path.is_symlink() else None
    if path.exists() and not path.is_symlink():  # a plain directory from elsewhere
        path.rename(path.parent / f".{path.name}.replaced-{uuid.uuid4().hex[:8]}")
    link = path.parent / f".{path.name}.link-{uuid.uuid4().hex[:8]}"
    os.symlink(version.name, link)
    os.replace(link, path)
    if previous is not None and previous != version.resolve():
        shutil.rmtree(previous, ignore_errors=True)


def _remove_leftovers(path: Path) -> None:
    """Drop directories of interrupted writes (never the one `path` points to);
    only called under the lock, so none of them is being written."""
    current = path.resolve() if path.is_symlink() else None
    for sibling in path.parent.glob(f".{path.name}.*"):
        if current is not None and sibling.resolve() == current:
            continue
        if sibling.is_symlink() or sibling.is_file():
            sibling.unlink(missing_ok=True)
        else:
            shutil.rmtree(sibling, ignore_errors=True)


def remove_directory(path: Path, lock: ResourceLock, wait: bool = False) -> bool:
    """Delete `path` (link and target) while holding `lock`; True when
    something was there."""
    path = Path(path)
    with lock.hold(wait=wait):
        found = path.exists() or path.is_symlink()
        if path.is_symlink():
            target = path.resolve()
            path.unlink()
            shutil.rmtree(target, ignore_errors=True)
        elif path.exists():
            shutil.rmtree(path)
        if path.parent.exists():
            _remove_leftovers(path)
    return found


def write_manifest(directory: Path, manifest: dict) -> None:
    (Path(directory) / MANIFEST).write_text(
        json.dumps(manifest, indent=2, sort_keys=True)
    )


def read_manifest(directory: Path) -> dict | None:
    """The manifest of a model directory, or None when there is no complete model."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def save_arrays(path: Path, arrays: dict) -> None:
    """Save numpy arrays and scipy sparse matrices to one npz file, without pickle."""
    import numpy as np
    import scipy.sparse as sp

    flat = {}
    for name, value in arrays.items():
        if sp.issparse(value):
            value = value.tocsr()
            flat[f"{name}.data"] = value.data
            flat[f"{name}.indices"] = value.indices
            flat[f"{name}.indptr"] = value.indptr
            flat[f"{name}.shape"] = np.asarray(value.shape, dtype=np.int64)
        else:
            flat[name] = np.asarray(value)
    np.savez(path, **flat)


def load_arrays(path: Path) -> dict:
    """Inverse of `save_arrays`."""
    import numpy as np

    with np.load(path, allow_pickle=False) as npz:
        flat = {key: npz[key] for key in npz.files}
    return _with_sparse(flat)


def _with_sparse(flat: dict) -> dict:
    """`flat` with each sparse matrix's NAME.data/.indices/.indptr/.shape
    arrays joined into one CSR matrix NAME (sharing their memory, mapped or
    not)."""
    import scipy.sparse as sp

    arrays = {}
    for key in list(flat):
        if key.endswith(".shape"):
            name = key[: -len(".shape")]
            arrays[name] = sp.csr_matrix(
                (
                    flat.pop(f"{name}.data"),
                    flat.pop(f"{name}.indices"),
                    flat.pop(f"{name}.indptr"),
                ),
                shape=tuple(int(n) for n in flat.pop(key)),
                copy=False,
            )
    arrays.update(flat)
    return arrays


def save_mappable(directory: Path, arrays: dict) -> None:
    """Save numpy arrays and scipy sparse matrices as raw .npy files in
    `directory` (created), which `load_mappable` maps into memory instead of
    reading: a model opens at once, and processes serving it share its pages.
    No pickle."""
    import numpy as np
    import scipy.sparse as sp

    directory.mkdir(parents=True, exist_ok=True)
    for name, value in arrays.items():
        if sp.issparse(value):
            value = value.tocsr()
            parts = {
                "data": value.data,
                "indices": value.indices,
                "indptr": value.indptr,
                "shape": np.asarray(value.shape, dtype=np.int64),
            }
            for part, array in parts.items():
                np.save(directory / f"{name}.{part}.npy", array, allow_pickle=False)
        else:
            np.save(directory / f"{name}.npy", np.asarray(value), allow_pickle=False)


def load_mappable(directory: Path) -> dict:
    """Inverse of `save_mappable`: the arrays memory-mapped read-only."""
    import numpy as np

    flat = {
        path.name[: -len(".npy")]: np.load(path, mmap_mode="r", allow_pickle=False)
        for path in sorted(directory.glob("*.npy"))
    }
    return _with_sparse(flat)


def publish_mappable(
    path: Path, arrays: dict, identity: dict, remove_siblings: bool = False
) -> None:
    """Save `arrays` as `save_mappable` does into a fresh sibling of `path`,
    with a manifest (`identity` and each file's dtype and shape) written last,
    and rename it to `path` in one step, so a reader finds the whole directory
    or none. A complete copy someone else published first is kept; a damaged
    one is replaced. `remove_siblings`: drop the other published directories
    beside it (caches of older versions)."""
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    work = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}"
    try:
        save_mappable(work, arrays)
        files = {}
        for file in sorted(work.glob("*.npy")):
            array = np.load(file, mmap_mode="r", allow_pickle=False)
            files[file.name] = {"dtype": array.dtype.str, "shape": list(array.shape)}
        write_manifest(work, {"identity": identity, "files": files})
        _publish(work, path, identity)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if remove_siblings:
        _remove_siblings(path)


def _remove_siblings(path: Path) -> None:
    """Remove the directories beside `path` that `publish_mappable` made:
    published ones, and the work directories of writers killed more than an
    hour ago. Anything else there is left alone (a folder someone keeps there,
    or the contents of the folder a symlinked parent points to)."""
    import time

    for sibling in path.parent.iterdir():
        if sibling.name == path.name or sibling.is_symlink():
            continue
        try:
            if _WORK_NAME.fullmatch(sibling.name):
                if time.time() - sibling.stat().st_mtime < 3600:
                    continue  # perhaps being written
            elif not _is_published(sibling):
                continue
        except OSError:
            continue
        shutil.rmtree(sibling, ignore_errors=True)


# the work directories of `publish_mappable` (`.NAME.<uuid>`) and `_publish`
_WORK_NAME = re.compile(r"\..+\.(?:[0-9a-f]{12}|damaged-[0-9a-f]{8})")


def _is_published(directory: Path) -> bool:
    """Whether `directory` has the manifest `publish_mappable` writes."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and {"identity", "files"} <= manifest.keys()


def _publish(work: Path, path: Path, identity: dict) -> None:
    try:
        os.rename(work, path)
    except OSError:
        if open_mappable(path, identity) is not None:
            return  # another process published the same content first
        damaged = path.parent / f".{path.name}.damaged-{uuid.uuid4().hex[:8]}"
        os.rename(path, damaged)
        if damaged.is_dir() and not damaged.is_symlink():
            shutil.rmtree(damaged, ignore_errors=True)
        else:  # a file or a link (never followed) where the directory goes
            damaged.unlink(missing_ok=True)
        os.rename(work, path)


def open_mappable(path: Path, identity: dict) -> dict | None:
    """The arrays that `publish_mappable` published at `path` for `identity`,
    memory-mapped read-only; None when there are none, when they were written
    for another identity, or when a file is missing, truncated or of another
    dtype or shape than the manifest says."""
    import numpy as np

    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        if manifest.get("identity") != identity:
            return None
        flat = {}
        for name, spec in manifest["files"].items():
            array = np.load(path / name, mmap_mode="r", allow_pickle=False)
            if array.dtype.str != spec["dtype"] or list(array.shape) != spec["shape"]:
                return None
            flat[name[: -len(".npy")]] = array
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return _with_sparse(flat)
