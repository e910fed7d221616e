"""Option declarations shared by the commands: a bounded number, the limit and
threshold of suggestions, and several options as one decorator."""

from __future__ import annotations

import click


def at_least(minimum: int | float, *names: str, default=None, help_text=None):
    """A number option bounded below (a float one when `minimum` is a float);
    its default, when it has one, is shown in --help."""
    kind = click.FloatRange if isinstance(minimum, float) else click.IntRange
    return click.option(
        *names,
        default=default,
        show_default=default is not None,
        type=kind(min=minimum),
        help=help_text,
    )


def limit_option(help_text: str = "Most subjects per document."):
    return at_least(1, "--limit", help_text=help_text)


def threshold_option(help_text: str = "Lowest score shown."):
    return click.option("--threshold", type=click.FloatRange(0, 1), help=help_text)


def together(*declared):
    """One decorator applying `declared` options, shown in --help in this order."""

    def apply(command):
        for option in reversed(declared):
            command = option(command)
        return command

    return apply
