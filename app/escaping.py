"""Values that came from events are data, never markup: the dashboard's escaping, one place.

`md()` makes any value literal text inside Streamlit Markdown (st.markdown, st.caption, alerts,
expander labels, tooltips), `html()` inside HTML and Plotly labels, and `csv_bytes()` writes a
download whose cells a spreadsheet will not run as formulas. Every component and view uses
these; none escapes on its own. Pure functions; no Streamlit.
"""

from __future__ import annotations

import html as _html
import re
import string
from typing import Any

import pandas as pd

# CommonMark lets any ASCII punctuation be backslash-escaped, and an escaped character starts
# nothing: no link, image, code span, emphasis, HTML tag, math (`\$`), emoji or icon shortcode
# (`\:`). Escaping all of it is simpler than knowing which.
_MD = str.maketrans({c: "\\" + c for c in string.punctuation})
# Line breaks would let a value open a new block (a heading, a list, a table) after our text.
_BREAKS = str.maketrans({"\r": " ", "\n": " ", "\u2028": " ", "\u2029": " ", "\x0b": " ", "\x0c": " "})

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


_WJ = "\u2060"  # WORD JOINER: invisible, and no autolink pattern runs across it
_AUTOLINK = re.compile(r"(\\:)(\\/\\/)|(www)(\\\.)|(\\@)", re.IGNORECASE)


def _defuse(match: re.Match[str]) -> str:
    if match.group(1):
        return match.group(1) + _WJ + match.group(2)
    if match.group(3):
        return match.group(3) + _WJ + match.group(4)
    return _WJ + match.group(5)


def md(value: Any) -> str:
    """`value` as literal text inside Markdown, on one line. GFM turns bare `https://…`, `www.…`
    and `a@b.c` into links after escapes are resolved, so a word joiner goes inside each."""
    if value is None:
        return ""
    return _AUTOLINK.sub(_defuse, str(value).translate(_BREAKS).translate(_MD))


def html(value: Any) -> str:
    """`value` as literal text inside HTML (element content or a quoted attribute) and Plotly labels."""
    if value is None:
        return ""
    return _html.escape(str(value), quote=True)


def csv_cell(value: Any) -> Any:
    """A text cell a spreadsheet would read as a formula (`=`, `+`, `-`, `@`, tab, CR first) gets a
    leading `'`, as OWASP advises; other values are returned unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with every text cell and column name neutralised by `csv_cell`."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(csv_cell)
    out.columns = [csv_cell(str(c)) for c in out.columns]
    return out


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """The one way the dashboard writes a CSV download (UTF-8, header row, no index)."""
    return csv_safe(frame).to_csv(index=False).encode()
