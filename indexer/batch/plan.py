"""What the output of a batch run depends on, kept in `OUT.parts/plan.json`.

A rerun resumes an unfinished run only when its plan is the same: the same
inputs (path, size, modification time), block size and options, and the same
project, down to its settings and the version of its model (and those of the
projects it combines, for an ensemble). Anything else would mix in one output
rows that two different runs computed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

# the settings of a project that change its suggestions
SETTINGS = ("language", "vocab", "backend", "limit", "threshold")


def plan_of(project, inputs: list[Path], block_size: int, options) -> dict:
    return {
        "project": project.id,
        "inputs": [_identity(path) for path in inputs],
        "block_size": block_size,
        "options": dataclasses.asdict(options),
        "models": models_of(project),
    }


def _identity(path: Path) -> list:
    """A file by its size and modification time; a directory by those of its
    documents (not its own: writing the output inside it changes that)."""
    if path.is_dir():
        digest = hashlib.sha256()
        for document in sorted(path.glob("*.txt")):
            stat = document.stat()
            digest.update(
                os.fsencode(f"{document.name}\0{stat.st_size}\0{stat.st_mtime_ns}\0")
            )
        return [str(path.resolve()), "documents", digest.hexdigest()]
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def models_of(project) -> dict[str, dict]:
    """The settings and model version of `project` and of every project it uses."""
    found: dict[str, dict] = {}
    waiting = [project]
    while waiting:
        current = waiting.pop()
        if current.id not in found:
            found[current.id] = {
                "settings": settings_of(current),
                "model": model_version(current),
            }
            waiting += _sources(current)
    return found


def settings_of(project) -> dict:
    config = project.config
    settings = {name: getattr(config, name) for name in SETTINGS}
    settings.update({f"params.{k}": v for k, v in sorted(config.params.items())})
    return settings


def _sources(project) -> list:
    """The projects an ensemble combines (none for other backends)."""
    sources = getattr(project.backend, "sources", None)
    return [source for source, _ in sources()] if callable(sources) else []


def model_version(project) -> str | None:
    """The saved model, in words: when it was trained and the directory that
    holds it (a new one for every training and every `learn`); None without one."""
    manifest = project.backend.manifest
    if manifest is None:
        return None
    try:
        where = os.readlink(project.model_dir)
    except OSError:  # a plain directory: its manifest's time tells versions apart
        where = str((project.model_dir / "manifest.json").stat().st_mtime_ns)
    return f"trained {manifest.get('trained_at')}, {where}"


def why_not_resumable(previous: dict, current: dict) -> str | None:
    """Why an unfinished run planned as `previous` cannot go on now (a sentence
    with what to do), or None when it can."""
    if previous == current:
        return None
    if any(previous.get(key) != current[key] for key in current if key != "models"):
        return (
            "with other inputs or settings: rerun that command to finish it, or "
            "add --force to start again"
        )
    before = previous.get("models")
    if before is None:
        return (
            "that did not record its model's version (an older version of "
            "indexer): add --force to start again"
        )
    return _model_change(before, current["models"])


def _model_change(before: dict, now: dict) -> str:
    for project_id in sorted(set(before) | set(now)):
        old, new = before.get(project_id), now.get(project_id)
        if old is None or new is None:
            return (
                f"whose ensemble had other sources (project '{project_id}'): add "
                "--force to start again with the current ones"
            )
        if old["settings"] != new["settings"]:
            return (
                f"made with other settings of project '{project_id}' "
                f"({_changed(old['settings'], new['settings'])}): add --force to "
                "start again with the current settings"
            )
        if old["model"] != new["model"]:
            return (
                f"made with another model of project '{project_id}' (that run: "
                f"{_described(old['model'])}; now: {_described(new['model'])}): add "
                "--force to start again with the current model"
            )
    return "with another project: add --force to start again"


def _changed(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k} {old.get(k)!r}, now {new.get(k)!r}" for k in keys)


def _described(version: str | None) -> str:
    return version or "no trained model"
