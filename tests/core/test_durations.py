"""`parse_duration`: the one parser of every window, lifetime and interval (settings, YAML, HTTP, CLI)."""

from __future__ import annotations

import pytest

from controltower.errors import ConfigError
from controltower.settings import parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("250ms", 0.25), ("90s", 90), ("15m", 900), ("4h", 14400), ("7d", 604800), ("2w", 1209600),
    ("1.5h", 5400), ("1 h", 3600), ("30", 30), ("1e-05", 0.00001), (".5m", 30), ("0s", 0),
])
def test_accepted(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [
    "١h", "٣٠s", "１h", "1_0h", "-1h", "nan", "inf", "infs", "1H", "h", "", "1h30m", "0x10h", "P1D", "1e400s",
    "1e9d", "99999999999999999999999999999h", "\x00", "1\u200bh",
])
def test_refused_with_a_config_error(text):
    with pytest.raises(ConfigError):
        parse_duration(text, where="window")
