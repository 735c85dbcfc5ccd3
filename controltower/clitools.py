"""What every CLI command shares: the settings from the global options, one-line errors, output.

Output is data: a line is never wrapped (a pipe, `grep`, `cut` see one record per line), and
a table fits the terminal's width only on a terminal; piped or captured, it is as wide as its
widest row. Values from events and users are printed as text, never as Rich markup (a
`[/]` in an order id neither crashes the command nor restyles it). Every command that prints
a table also has `--json` (`print_json`).

Rooms register their commands with `register(app)` functions and use these helpers; the
composition root (`wiring.cli`) owns the app and the global options.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NoReturn

import orjson
import typer
from rich.console import Console, ConsoleDimensions
from rich.table import Table
from rich.text import Text

from controltower.context import AppContext
from controltower.settings import Settings

PIPE_WIDTH = 100_000  # "unlimited": off a terminal a table is as wide as its content
# C0/C1 controls and Unicode line separators break a line; bidi controls reorder what it shows
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


class CliConsole(Console):
    """A Rich console that wraps nothing off a terminal and soft-wraps (never breaks) lines on one."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        # Rich asks stdin/stderr for a width too, so piped output would follow the terminal.
        return size if self.is_terminal else ConsoleDimensions(PIPE_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


console = CliConsole(soft_wrap=True)
err_console = CliConsole(stderr=True, soft_wrap=True)


def settings_of(ctx: typer.Context) -> Settings:
    root = ctx.find_root()
    settings = root.obj["settings"] if isinstance(root.obj, dict) else None
    if settings is None:
        raise RuntimeError("settings were not initialised by the CLI callback")
    return settings  # type: ignore[no-any-return]


def context_of(ctx: typer.Context, *, migrate_first: bool = True, application_name: str = "controltower-cli") -> AppContext:
    """Open the database the settings name (starting the embedded one), migrated unless told not to."""
    from controltower import migrate

    app_ctx = AppContext.open(settings_of(ctx), pool_size=2, application_name=application_name)
    if migrate_first:
        migrate.upgrade(app_ctx.engine)
    return app_ctx


def print_error(message: str) -> None:
    """`error: …` on stderr, one line; the message is text (it often quotes input), never markup."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", plain(message)), highlight=False)


def fail(message: str, code: int = 1) -> NoReturn:
    print_error(message)
    raise typer.Exit(code)


def plain(value: Any) -> str:
    """One line of text for a value: '' for None, control characters (newlines too) escaped."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        text = value.isoformat()
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value)
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


def line(*parts: Any, style: str | None = None) -> None:
    """Print the parts joined by spaces as one line of text (no markup in the values)."""
    console.print(Text(" ".join(plain(p) for p in parts), style=style or ""), highlight=False)


def print_table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    title: str | None = None,
    right: Sequence[str] = (),
    styles: dict[int, Any] | None = None,
) -> None:
    """A table of plain-text cells; `styles` maps a column index to a function value -> style."""
    table = Table(title=title)
    for name in columns:
        table.add_column(name, justify="right" if name in right else "left", overflow="fold")
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            style = (styles or {}).get(i)
            cells.append(Text(plain(value), style=style(value) if style else ""))
        table.add_row(*cells)
    console.print(table)


def print_json(value: Any) -> None:
    """Indented JSON on stdout (datetimes as ISO 8601; anything else orjson cannot, as text)."""
    typer.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str).decode())


def keys_json(row: dict[str, Any], now: datetime) -> dict[str, Any]:
    """One API key as `keys list --json` prints it (never the key or its hash)."""
    expires = row.get("expires_at")
    state = "revoked" if row.get("revoked_at") else "expired" if expires is not None and expires <= now else "active"
    out = {k: v for k, v in row.items() if k not in ("key_hash", "id")}
    return {**out, "prefix": f"ct_{row.get('prefix')}_", "state": state}
