"""The dashboard's safety rules as pure functions, table-tested: escaping (Markdown, HTML, CSV),
deep links, who may sign in, and where `controltower dashboard` may listen."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app import access, links, shaping
from app.commands import bind_refusal
from app.components import health_grid, keys_line, transaction_header
from app.escaping import csv_bytes, csv_cell, html, md
from app.svgcharts import line_chart
from controltower.settings import Settings

EVIL = "[Re-authenticate here](https://evil.example/login) ![t](https://evil.example/pixel.png)"
# A Markdown link or image that would render: `[text](url)` with neither bracket escaped.
LINK = re.compile(r"(?<!\\)\[[^\]]*(?<!\\)\]\(")
# GFM finds these in the text after escapes are resolved (mdast-util-gfm-autolink-literal).
AUTOLINK = re.compile(r"https?://|www\.|[-.\w+]@[-\w]+\.[-\w]", re.IGNORECASE)


def unescape(markdown: str) -> str:
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown)


def rendered_link(markdown: str) -> bool:
    """Whether CommonMark/GFM would make a link, image, autolink or HTML out of `markdown`."""
    return bool(LINK.search(markdown) or AUTOLINK.search(unescape(markdown))
                or re.search(r"(?<!\\)<[a-zA-Z/!?]", markdown))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain words 42", "plain words 42"),
        (EVIL, "\\[Re\\-authenticate here\\]\\(https\\:\u2060\\/\\/evil\\.example\\/login\\) "
               "\\!\\[t\\]\\(https\\:\u2060\\/\\/evil\\.example\\/pixel\\.png\\)"),
        ("a`b`c", r"a\`b\`c"),
        ("**bold** _it_ ~~s~~ $x$ :smile: <b>", r"\*\*bold\*\* \_it\_ \~\~s\~\~ \$x\$ \:smile\: \<b\>"),
        ("line1\n# heading\r\n- item", r"line1 \# heading  \- item"),
        ("jane@example.com www.evil.example", "jane\u2060\\@example\\.com www\u2060\\.evil\\.example"),
        ("ｆｕｌｌ‐width [ｘ](ｙ) zero\u200bwidth", "ｆｕｌｌ‐width \\[ｘ\\]\\(ｙ\\) zero\u200bwidth"),
        (None, ""),
        (12.5, r"12\.5"),
    ],
)
def test_md_makes_any_value_literal_text(value: object, expected: str) -> None:
    assert md(value) == expected
    assert not rendered_link(md(value))


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_md_never_leaves_an_active_link_and_keeps_the_text(text: str) -> None:
    out = md(text)
    assert not rendered_link(out)
    assert "\n" not in out and "\r" not in out
    shown = re.sub(r"\\(.)", r"\1", out).replace("\u2060", "")
    assert shown == re.sub(r"[\r\n\u2028\u2029\x0b\x0c]", " ", text).replace("\u2060", "")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('<img src="https://evil.example/p.png">', "&lt;img src=&quot;https://evil.example/p.png&quot;&gt;"),
        ("<a href='x'>", "&lt;a href=&#x27;x&#x27;&gt;"),
        ("a & b", "a &amp; b"),
        (None, ""),
    ],
)
def test_html_escapes_markup_and_quotes(value: object, expected: str) -> None:
    assert html(value) == expected


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ('=HYPERLINK("https://evil.example","x")', '\'=HYPERLINK("https://evil.example","x")'),
        ("+1 206", "'+1 206"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"), ("\r=1", "'\r=1"),
        ("SO-1001", "SO-1001"), (" =1", " =1"), ("", ""), (-5, -5), (None, None),
    ],
)
def test_csv_cell_neutralises_formulas(cell: object, expected: object) -> None:
    assert csv_cell(cell) == expected


def test_breaches_csv_has_no_formula_cells() -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    items = pd.DataFrame([{
        "correlation_id": "@cid", "order_id": '=HYPERLINK("https://evil.example/x","Refund")', "channel": "walmart",
        "sla": "erp_posting", "started_at": now, "age_ms": 60_000.0, "overdue_ms": 30_000.0,
        "last_milestone": "+order.received", "status": "-error",
    }])
    shown = shaping.breaches_display(items).drop(columns="Transaction")
    back = pd.read_csv(io.BytesIO(csv_bytes(shown)), dtype=str, keep_default_na=False)
    row = back.iloc[0]
    assert row["Order id"] == '\'=HYPERLINK("https://evil.example/x","Refund")'
    assert row["Correlation id"] == "'@cid" and row["Last milestone"] == "'+order.received"
    assert row["Status"] == "'-error" and row["Channel"] == "walmart" and row["Age"] == "1 min"
    assert not any(str(v).startswith(("=", "+", "-", "@", "\t", "\r")) for v in back.to_numpy().ravel())


@pytest.mark.parametrize(
    ("cid", "link"),
    [
        ("cid-1", "transaction?id=cid-1"),
        ("x&id=other#", "transaction?id=x%26id%3Dother%23"),
        ("a b/ü?", "transaction?id=a+b%2F%C3%BC%3F"),
    ],
)
def test_transaction_links_encode_the_correlation_id(cid: str, link: str) -> None:
    assert links.tx_link(cid) == link
    from urllib.parse import parse_qs, urlsplit

    assert parse_qs(urlsplit(link).query) == {"id": [cid]}


def test_one_transaction_parameter_with_the_old_name_as_alias() -> None:
    assert links.tx_param({"id": "a"}) == "a"
    assert links.tx_param({"correlation_id": "b"}) == "b"
    assert links.tx_param({"id": "a", "correlation_id": "b"}) == "a"
    assert links.tx_param({"q": "c"}) is None
    assert links.breaches_link("erp_posting", "x&y") == "breaches?sla=erp_posting&channel=x%26y"


def test_components_escape_event_values() -> None:
    tx = {"status": "error", "channel": "<b>walmart</b>", "order_id": EVIL, "correlation_id": "c`id", "flow": "order",
          "last_milestone": "order.received", "last_system": '"><img src=x onerror=alert(1)>', "event_count": 1,
          "error_count": 1, "retry_count": 0, "first_event_at": None, "last_event_at": None}
    card = transaction_header(tx)
    assert "<img" not in card and "<b>walmart" not in card and "&lt;img src=x" in card
    keys = keys_line({"sku": ["a`b", "</code><a href='https://evil.example'>x</a>"]})
    assert "<a " not in keys and "<code>a`b</code>" in keys and keys.count("<code>") == keys.count("</code>") == 2
    grid = health_grid(pd.DataFrame([{"channel": "<i>x</i>", "sla": "s", "health": "ok", "symbol": "✓",
                                      "value": "<img src=y>", "reason": EVIL}]))
    assert "<img" not in grid and "<i>" not in grid and "evil.example" in grid
    chart = line_chart(pd.DataFrame({"bucket": [datetime(2026, 1, 1, tzinfo=UTC)], "channel": ["<a href=z>"],
                                     "v": [1.0]}), y="v", title="<script>", unit="u")
    assert "<a href" not in chart and "<script>" not in chart


def test_svg_line_chart_maps_values_to_the_plot_area() -> None:
    from app import svgcharts as s

    t0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    frame = pd.DataFrame({"bucket": [t0, t0 + pd.Timedelta(minutes=10)], "channel": ["amazon", "amazon"], "v": [0.0, 8.0]})
    chart = s.line_chart(frame, y="v", title="T", unit="u")
    # top = nice_max(8) = 8: 0 at the bottom-left corner of the plot area, 8 at the top-right.
    bottom, right = s.HEIGHT - s.BOTTOM, s.WIDTH - s.RIGHT
    assert f'points="{s.LEFT:.1f},{bottom:.1f} {right:.1f},{s.TOP:.1f}"' in chart
    assert [s.nice_max(v) for v in (0, 0.3, 3, 8, 9, 188, 250, 1001)] == [1.0, 0.4, 4, 8, 10, 200, 400, 2000]


# -- who may sign in, where the dashboard may listen ---------------------------------------------------
@pytest.mark.parametrize(
    ("user", "domains", "groups", "allowed"),
    [
        ({"email": "ana@acme.com"}, (), (), True),  # no allow-list: whoever the IdP signed in
        ({"email": "ana@acme.com"}, ("acme.com",), (), True),
        ({"email": "Ana@ACME.com"}, ("acme.com",), (), True),
        ({"email": "ana@ａｃｍｅ.com"}, ("acme.com",), (), True),  # full-width: the same letters
        ({"email": "ana@evilacme.com"}, ("acme.com",), (), False),  # no suffix match
        ({"email": "ana@acme.com.evil.example"}, ("acme.com",), (), False),
        ({"email": "ana@sub.acme.com"}, ("acme.com",), (), False),
        ({"email": "ana@acme.com", "email_verified": False}, ("acme.com",), (), False),
        ({"email": "acme.com"}, ("acme.com",), (), False),
        ({"email": "a@b@acme.com"}, ("acme.com",), (), False),
        ({"email": None}, ("acme.com",), (), False),
        ({"email": "x@other.org", "groups": ["ops", "support"]}, ("acme.com",), ("support",), True),
        ({"email": "x@other.org", "groups": "ops"}, (), ("support",), False),
        ({"email": "x@other.org", "groups": ["Support\u200b"]}, (), ("support",), True),
        ({}, ("acme.com",), ("ops",), False),
    ],
)
def test_may_sign_in(user: dict[str, object], domains: tuple[str, ...], groups: tuple[str, ...], allowed: bool) -> None:
    assert access.may_sign_in(user, domains=domains, groups=groups) is allowed


@pytest.mark.parametrize(
    ("user", "auth", "typed", "actor"),
    [
        ({"is_logged_in": True, "email": "ana@acme.com", "name": "Ana"}, True, "mallory", "ana@acme.com"),
        ({"is_logged_in": True, "sub": "123"}, True, "", "123"),
        ({"is_logged_in": False, "email": "ana@acme.com"}, True, "mallory", None),
        ({}, False, "  Robin ", "Robin"),
        ({}, False, "   ", None),
    ],
)
def test_actor_is_the_signed_in_identity(user: dict[str, object], auth: bool, typed: str, actor: str | None) -> None:
    assert access.actor(user, auth_configured=auth, typed=typed) == actor


@pytest.mark.parametrize(
    ("host", "auth", "proxy", "refused"),
    [
        ("127.0.0.1", False, False, False), ("localhost", False, False, False), ("::1", False, False, False),
        ("[::1]", False, False, False), ("127.0.0.2", False, False, False),
        ("0.0.0.0", False, False, True), ("::", False, False, True), ("10.0.0.5", False, False, True),
        ("dashboard.example", False, False, True),
        ("0.0.0.0", True, False, False), ("0.0.0.0", False, True, False),
    ],
)
def test_bind_decision(host: str, auth: bool, proxy: bool, refused: bool) -> None:
    reason = access.bind_refusal(host, auth_configured=auth, behind_proxy=proxy)
    assert (reason is not None) is refused
    if reason:
        assert host in reason and "CONTROLTOWER_DASHBOARD_BEHIND_PROXY" in reason and "\n" not in reason


def test_bind_reads_the_auth_section_and_the_proxy_setting(tmp_path: Path) -> None:
    plain = Settings.load(environ={})
    assert bind_refusal("0.0.0.0", plain, cwd=tmp_path) is not None
    assert bind_refusal("0.0.0.0", Settings.load(environ={"CONTROLTOWER_DASHBOARD_BEHIND_PROXY": "1"}),
                        cwd=tmp_path) is None
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "secrets.toml").write_text('[other]\nx = 1\n')
    assert bind_refusal("0.0.0.0", plain, cwd=tmp_path) is not None
    (tmp_path / ".streamlit" / "secrets.toml").write_text('[auth]\nredirect_uri = "https://ct.example/oauth2callback"\n')
    assert bind_refusal("0.0.0.0", plain, cwd=tmp_path) is None


def test_dashboard_command_refuses_a_public_bind_in_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "HOME": str(tmp_path)}
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "wiring.cli", "--database-url", "postgresql://u@127.0.0.1:9/x", "dashboard",
         "--host", "0.0.0.0", "--port", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: refusing to serve the dashboard on 0.0.0.0"), done.stderr
