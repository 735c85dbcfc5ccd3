"""CLI commands of the `simulator` room, registered by the composition root."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this room's commands to `app`."""
