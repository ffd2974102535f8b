"""Command-line choices read from the registries, so that no command repeats a list of names."""
from __future__ import annotations

import click

from ..registry import load_object


class RegistryChoice(click.Choice):
    """A ``click.Choice`` of the names a registry's query function returns (``"module:function"``,
    e.g. ``"flowstore.codec:list_codecs"``), asked only when click needs them: ``flowstore --help``
    imports every command's module, and this keeps it from importing numpy, OpenCV or torch."""

    def __init__(self, query: str):
        self.query = query
        self.case_sensitive = True

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(load_object(self.query)())

    def __repr__(self) -> str:
        return f"RegistryChoice({self.query!r})"
