"""The projects a server serves: who may see them, and their models, loaded once
per process, shared by all request threads and swapped when retrained.

A training (`indexer train` in another process) writes a new model directory
and swaps the `model` link; the server notices the new link within
`check_interval` seconds (or on `POST /v1/projects/ID/reload`), loads the new
model into a fresh backend and swaps that in. Requests running meanwhile finish
on the old backend, which nobody mutates, so every answer comes from exactly one
model.

Each project is in one of the STATES: `loading` (the preload has not reached
it yet), `loaded`, `not_trained` (nothing to load until a training), or
`unavailable` (loading failed; a reason without paths is kept), and with
preloading off `unloaded` until its first use. The server is ready when none
is loading or unavailable: a project without a model cannot become ready by
waiting, so it does not hold the others back. A failed load is tried again in
the background (after check_interval seconds, then ever less often), so that a
project whose model server comes up later becomes ready without a restart.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from indexer.backend import ENSEMBLE
from indexer.config import ACCESS_LEVELS
from indexer.errors import (
    BusyError,
    DependencyError,
    IndexerError,
    NotFoundError,
    NotTrainedError,
    ServiceError,
)
from indexer.project import Project, Projects

log = logging.getLogger("indexer.rest")


class Unauthorized(IndexerError):
    """A wrong API key (or none where one is needed)."""

    status = 401
    title = "Unauthorized"


class Forbidden(IndexerError):
    """An operation this server does not allow."""

    status = 403
    title = "Forbidden"


class Unavailable(IndexerError):
    """A project misconfigured on the server: the caller cannot fix it, and the
    details (file paths) go to the server log only."""

    status = 503
    title = "Service unavailable"


_UNLOADED = object()
LOADING, LOADED, NOT_TRAINED, UNAVAILABLE, UNLOADED = (
    "loading",
    "loaded",
    "not_trained",
    "unavailable",
    "unloaded",
)
STATES = (LOADING, LOADED, NOT_TRAINED, UNAVAILABLE, UNLOADED)
#: the states that make the server not ready
NOT_READY = (LOADING, UNAVAILABLE)
#: seconds before a failed load is first tried again (where check_interval
#: is off), and the most between tries: the wait doubles after each failure
RETRY_INTERVAL = 2.0
MAX_RETRY_INTERVAL = 60.0


@dataclass
class _Model:
    """What the served backend of one project was loaded from."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    learning: threading.Lock = field(default_factory=threading.Lock)
    version: object = _UNLOADED
    checked: float = float("-inf")
    ready: bool = False
    state: str = UNLOADED
    reason: str | None = None  # why it is not loaded, fit for any caller
    retry_at: float = float("-inf")  # when a failed load may be tried again
    retry_after: float = 0.0  # the wait before the next retry (it doubles)
    retrying: bool = False  # a retry runs in the background


def safe_reason(exc: BaseException) -> str:
    """Why a project could not be loaded, in words that name no file: what the
    API tells callers anyway (not trained, a missing package), else the kind
    of failure (the server log has the details)."""
    if isinstance(exc, NotTrainedError | DependencyError):
        return exc.message
    if isinstance(exc, ServiceError):
        return "its model server did not answer (the server log says why)"
    if isinstance(exc, IndexerError):
        return "it is misconfigured on the server (the server log says how)"
    return (
        f"its model could not be loaded: {type(exc).__name__} (the server log says why)"
    )


def model_version(project: Project) -> tuple[str | None, int | None, str | None]:
    """Identifies what a project serves: its saved model (the link target and
    the manifest's mtime) and its vocabulary's stored version (a `load-vocab`
    in another process is noticed like a training)."""
    path = project.model_dir
    try:
        target = os.readlink(path)
    except OSError:
        target = None
    try:
        mtime = (path / "manifest.json").stat().st_mtime_ns
    except OSError:
        mtime = None
    return target, mtime, _vocabulary_version(project)


def _vocabulary_version(project: Project) -> str | None:
    try:
        return os.readlink(project.projects.data_dir / "vocabs" / project.config.vocab)
    except OSError:
        return None


class ServedProjects:
    """Access control and model life cycle for the REST API."""

    def __init__(
        self,
        projects: Projects,
        api_key: str | None = None,
        check_interval: float | None = 2.0,
    ):
        self.projects = projects
        self.api_key = api_key or None
        self.check_interval = check_interval
        self._models: dict[str, _Model] = {}
        self._lock = threading.Lock()
        self.sources = self._ensemble_sources()
        self.access = self._effective_access()

    def _effective_access(self) -> dict[str, str]:
        """Each project's access level, an ensemble's lowered to its least
        visible source's: else a public ensemble would serve a private source."""
        configs = self.projects.config.projects
        access = {pid: config.access for pid, config in configs.items()}
        ensembles = self.sources
        for _ in configs:  # ensembles of ensembles: until nothing changes
            changed = False
            for project_id, sources in ensembles.items():
                levels = [access[project_id], *(access[s] for s in sources)]
                level = max(levels, key=ACCESS_LEVELS.index)
                if level != access[project_id]:
                    log.warning(
                        "Project '%s' is served as %s, like its least visible "
                        "source (configured: %s)",
                        project_id,
                        level,
                        configs[project_id].access,
                    )
                    access[project_id], changed = level, True
            if not changed:
                break
        return access

    def _ensemble_sources(self) -> dict[str, list[str]]:
        out = {}
        for project in self.projects:
            try:
                if project.kind == ENSEMBLE:
                    out[project.id] = [p.id for p, _ in project.backend.sources()]
            except IndexerError:
                continue  # reported as unavailable when used
        return out

    # -- access ------------------------------------------------------------
    def authorised(self, supplied: str | None) -> bool:
        """True for the right key; an error for a wrong one; False for none."""
        if not supplied or self.api_key is None:
            return False
        if not hmac.compare_digest(supplied.encode(), self.api_key.encode()):
            raise Unauthorized("The X-API-Key is wrong")
        return True

    def require_key(self, supplied: str | None) -> None:
        if self.api_key is None:
            raise Forbidden(
                "This server has no API key, so operations that need one are off: "
                "start it with INDEXER_API_KEY set"
            )
        if not self.authorised(supplied):
            raise Unauthorized("This operation needs the API key in X-API-Key")

    def listed(self, authorised: bool) -> list[str]:
        """Ids of the projects a caller sees in listings."""
        return [
            project_id
            for project_id, access in self.access.items()
            if authorised or access == "public"
        ]

    def lookup(self, project_id: str, authorised: bool) -> Project:
        """The project (its model is not loaded here); private ones need the key."""
        access = self.access.get(project_id)
        if access is None or (access == "private" and not authorised):
            raise NotFoundError(f"Project '{project_id}' not found")
        return self.projects.get(project_id)

    def usable(self, project: Project) -> Project:
        """The project with its model loaded (or reloaded) and its vocabulary;
        a misconfiguration is logged and reported without its details."""
        try:
            self.refresh(project)
            _ = project.vocab
        except (NotTrainedError, DependencyError):
            raise
        except IndexerError as exc:
            log.error("Project '%s' is unavailable: %s", project.id, exc.message)
            raise Unavailable(
                f"Project '{project.id}' is unavailable: it is misconfigured on the "
                "server (the server log says how)"
            ) from None
        return project

    def require_learning(self, project: Project, authorised: bool) -> None:
        """Learning changes the model: allowed by the project or the API key."""
        if not (project.config.allow_learn or authorised):
            raise Forbidden(
                f"Project '{project.id}' is not configured to allow learning via "
                "API: set allow_learn = true, or send the API key"
            )

    @contextlib.contextmanager
    def learning(self, project: Project, timeout: float) -> Iterator[None]:
        """Held while `project` learns: one update at a time per process, and
        the project's lock against every other process. A busy project is
        waited for up to `timeout` seconds (a learn holds it briefly), then
        BusyError."""
        deadline = time.monotonic() + timeout
        turn = self._model(project.id).learning
        if not turn.acquire(timeout=max(0.0, timeout)):
            raise BusyError(
                f"Project '{project.id}' is busy: other requests of this server "
                f"are learning; waited {timeout:g} s",
                resource=f"Project '{project.id}'",
            )
        try:
            left = max(0.0, deadline - time.monotonic())
            with project.lock.hold(timeout=left):
                yield
        finally:
            turn.release()

    def vocab_visible(self, vocab_id: str, authorised: bool) -> bool:
        """A vocabulary is hidden only when every project using it is private."""
        users = [
            pid
            for pid, c in self.projects.config.projects.items()
            if c.vocab == vocab_id
        ]
        return (
            authorised or not users or any(self.access[u] != "private" for u in users)
        )

    # -- models --------------------------------------------------------------
    @property
    def loaded(self) -> int:
        return sum(m.ready for m in self._models.values())

    def _model(self, project_id: str) -> _Model:
        with self._lock:
            return self._models.setdefault(project_id, _Model())

    def refresh(self, project: Project, force: bool = False, _seen=None) -> None:
        """Load the model on first use; load it again when a training replaced it."""
        model = self._model(project.id)
        if model.version is _UNLOADED or force:
            with model.lock:  # everybody waits for a first load
                if model.version is _UNLOADED or force:
                    self._load(project, model, first=model.version is _UNLOADED)
        elif self.check_interval is not None:
            now = time.monotonic()
            if now - model.checked >= self.check_interval:
                model.checked = now
                # one thread reloads; the others go on with the old model
                if model_version(project) != model.version and model.lock.acquire(
                    blocking=False
                ):
                    try:
                        if model_version(project) != model.version:
                            self._load(project, model, first=False)
                    finally:
                        model.lock.release()
        if project.kind == ENSEMBLE:
            self._refresh_sources(project, _seen or {project.id})

    def retry_failed(self) -> None:
        """Load each unavailable project again, in the background, where its
        wait since the last failure is over; the state follows the outcome."""
        with self._lock:
            models = dict(self._models)
        now = time.monotonic()
        for project_id, model in models.items():
            if model.state != UNAVAILABLE or model.retrying or now < model.retry_at:
                continue
            model.retrying = True
            threading.Thread(
                target=self._retry,
                args=(project_id, model),
                name=f"indexer-retry-{project_id}",
                daemon=True,
            ).start()

    def _retry(self, project_id: str, model: _Model) -> None:
        try:
            self.refresh(self.projects.get(project_id), force=True)
        except Exception as exc:  # noqa: BLE001 - the state and the log say it
            message = exc.message if isinstance(exc, IndexerError) else repr(exc)
            log.warning(
                "Project '%s' is still unavailable (tried again in %g s): %s",
                project_id,
                model.retry_after,
                message,
            )
        finally:
            if model.state == UNAVAILABLE:
                self._schedule_retry(model, again=True)
            model.retrying = False

    def _schedule_retry(self, model: _Model, again: bool = False) -> None:
        base = self.check_interval or RETRY_INTERVAL
        wait = min(2 * model.retry_after, MAX_RETRY_INTERVAL) if again else base
        model.retry_after = max(wait, base)
        model.retry_at = time.monotonic() + model.retry_after

    def _refresh_sources(self, project: Project, seen: set[str]) -> None:
        try:
            sources = [source for source, _ in project.backend.sources()]
        except IndexerError:
            return  # the suggestion itself will report it
        for source in sources:
            if source.id not in seen:
                seen.add(source.id)
                self.refresh(source, _seen=seen)

    def _load(self, project: Project, model: _Model, first: bool) -> None:
        version = model_version(project)
        started = time.perf_counter()
        try:
            if not first and version[2] != model.version[2]:
                # reloaded elsewhere: read the new version, then the model with it
                project.projects.vocab(project.config.vocab, autoload=False).refresh()
            project.reload()
        except IndexerError as exc:
            # not trained (yet): remember what was there, so a training is noticed
            model.version = version
            if not model.ready:
                failed = NOT_TRAINED if isinstance(exc, NotTrainedError) else None
                self._set_failed(model, failed or UNAVAILABLE, exc)
            raise
        except Exception as exc:
            if first or not model.ready:
                self._set_failed(model, UNAVAILABLE, exc)
                raise
            log.exception(
                "Reloading project '%s' failed; serving its previous model", project.id
            )
            return
        model.version = version
        model.checked = time.monotonic()
        model.ready = True
        model.state, model.reason = LOADED, None
        log.info(
            "Loaded the model of project '%s' in %.2f s",
            project.id,
            time.perf_counter() - started,
        )

    def preload(self) -> list[str]:
        """Load every project's model now; the errors, one line each (logged:
        a project not trained yet in plain words at INFO, others as warnings)."""
        self._mark_loading()
        errors = []
        for project_id in self.projects.ids():
            try:
                self.refresh(self.projects.get(project_id))
            except NotTrainedError as exc:
                # expected before its first training: not an error of the server
                log.info("%s (until then it has nothing to serve)", exc.message)
                errors.append(f"{project_id}: {exc.message}")
                self._failed(project_id, exc)
            except IndexerError as exc:
                log.warning("Not ready: %s: %s", project_id, exc.message)
                errors.append(f"{project_id}: {exc.message}")
                self._failed(project_id, exc)
            except Exception as exc:  # a broken model must not stop the others
                log.exception("Loading project '%s' failed", project_id)
                errors.append(f"{project_id}: {type(exc).__name__}: {exc}")
                self._failed(project_id, exc)
        return errors

    def preload_in_background(self) -> threading.Thread:
        """Load every model in a thread, so that the server answers (health,
        readiness) while it loads; the errors go to the log."""

        def load() -> None:
            started = time.perf_counter()
            self.preload()
            log.info(
                "Preloading done in %.1f s: %d of %d projects loaded",
                time.perf_counter() - started,
                self.loaded,
                len(self.projects.ids()),
            )

        self._mark_loading()  # from now on, not once the thread runs
        thread = threading.Thread(target=load, name="indexer-preload", daemon=True)
        thread.start()
        return thread

    def _mark_loading(self) -> None:
        for project_id in self.projects.ids():
            model = self._model(project_id)
            if model.state == UNLOADED:
                model.state = LOADING

    def _failed(self, project_id: str, exc: BaseException) -> None:
        """A failure outside the project's own loading (a source's, a
        vocabulary's) leaves it unavailable rather than loading forever."""
        model = self._model(project_id)
        if model.state in (LOADING, UNLOADED):
            failed = NOT_TRAINED if isinstance(exc, NotTrainedError) else UNAVAILABLE
            self._set_failed(model, failed, exc)

    def _set_failed(self, model: _Model, state: str, exc: BaseException) -> None:
        was = model.state
        model.state, model.reason = state, safe_reason(exc)
        if state == UNAVAILABLE and was != UNAVAILABLE:
            self._schedule_retry(model)

    # -- readiness -------------------------------------------------------------
    def states(self) -> dict[str, tuple[str, str | None]]:
        """Each project's (state, reason); an ensemble whose sources are all
        loaded takes the first of its sources that is not."""
        self.retry_failed()
        with self._lock:
            models = dict(self._models)
        own = {
            pid: (m.state, m.reason) if (m := models.get(pid)) else (UNLOADED, None)
            for pid in self.projects.ids()
        }
        out = dict(own)
        for _ in self.sources:  # ensembles of ensembles: until nothing changes
            changed = False
            for project_id, sources in self.sources.items():
                if out[project_id][0] != LOADED:
                    continue
                for source in sources:
                    state, reason = out.get(source, (LOADED, None))
                    if state != LOADED:
                        why = f"its source '{source}' is {state}"
                        out[project_id] = (state, f"{why}: {reason}" if reason else why)
                        changed = True
                        break
            if not changed:
                break
        return out

    def ready(self) -> bool:
        """No project is still loading or failed to load."""
        return not any(state in NOT_READY for state, _ in self.states().values())
