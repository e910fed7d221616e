"""One exception hierarchy for the CLI (exit codes) and the REST API (HTTP status)."""

from __future__ import annotations

import click


class IndexerError(click.ClickException):
    """An error a person can act on; `exit_code` for the CLI, `status` for REST."""

    exit_code = 1
    status = 400
    title = "Bad request"

    def format_message(self) -> str:
        return self.message


class ConfigError(IndexerError):
    """projects.cfg or a parameter is wrong."""

    exit_code = 2
    title = "Configuration error"


class UsageError(IndexerError):
    """The caller asked for something impossible (bad option value, bad input)."""

    exit_code = 2
    title = "Bad request"


class NotFoundError(IndexerError):
    """A project, vocabulary, file or concept does not exist."""

    exit_code = 2
    status = 404
    title = "Not found"


class NotTrainedError(IndexerError):
    """A project needs training (or its model is unusable) before it can suggest."""

    status = 409
    title = "Project not trained"

    @classmethod
    def of(cls, project_id: str) -> NotTrainedError:
        """The error for a project that was never trained."""
        return cls(
            f"Project '{project_id}' is not trained: run "
            f"`indexer train {project_id} CORPUS`"
        )


class InputError(IndexerError):
    """A document, corpus or vocabulary file is malformed."""

    status = 400
    title = "Invalid input"


class DependencyError(IndexerError):
    """An optional dependency or a pretrained model is missing."""

    status = 503
    title = "Missing dependency"


class NotSupportedError(IndexerError):
    """The project's backend cannot do what was asked (e.g. learn online)."""

    status = 400
    title = "Not supported"


class BusyError(IndexerError):
    """Another process is training, clearing or loading the same resource
    (`resource` names it, e.g. "Project 'x'"): the REST API answers 503 with
    Retry-After."""

    status = 503
    title = "Busy"

    def __init__(self, message: str, resource: str = "The resource"):
        super().__init__(message)
        self.resource = resource


class BackendError(IndexerError):
    """A backend produced an invalid result: a bug in the backend, not the input."""

    status = 500
    title = "Backend error"


class ServiceError(IndexerError):
    """A model server the project relies on is down, too slow or answers nonsense."""

    status = 503
    title = "Model server unavailable"
