"""The `indexer` command: parse arguments, call a Project, print results.

One module per group of commands; importing them registers the commands on
`cli`. Heavy libraries are imported inside the commands, so `--help` is fast.
"""

from indexer.cli import (  # noqa: F401
    catalog,
    documents,
    evaluation,
    finetuning,
    importing,
    language,
    learning,
    serving,
)
from indexer.cli.app import cli, main

__all__ = ["cli", "main"]
