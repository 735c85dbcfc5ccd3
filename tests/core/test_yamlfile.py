"""Config YAML (slas.yaml, alerts.yaml, masking rules) under hostile files: refused with file:line, fast."""

from __future__ import annotations

import time

import pytest

from controltower import yamlfile
from controltower.errors import ConfigError

LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{n}: &{n} [{','.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)


def test_billion_laughs_is_refused_quickly():
    """Nine lines expanding to 9^9 values hung every config loader (ran > 20 s before being killed)."""
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"^laughs.yaml:\d+: more than 100000 values"):
        yamlfile.loads(LAUGHS, "laughs.yaml")
    assert time.perf_counter() - started < 5


def test_modest_anchors_still_work():
    doc = yamlfile.loads("base: &b {severity: page, team: ops}\nrules:\n  - labels: *b\n  - labels: *b\n", "a.yaml")
    assert doc.data["rules"] == [{"labels": {"severity": "page", "team": "ops"}}] * 2


@pytest.mark.parametrize(("text", "said"), [
    ("a: 1\na: 2\n", "duplicate key"),
    ("a: !!python/object:os.system ls\n", "not valid here"),
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
])
def test_other_hostile_documents_are_config_errors(text, said):
    with pytest.raises(ConfigError, match=said):
        yamlfile.loads(text, "x.yaml")


def test_unquoted_times_and_ranges_stay_text_not_base_60_numbers() -> None:
    doc = yamlfile.loads("cutoff: 14:00\ndays: 1:5\nyears: [2026:2027]\nplain: 42\nratio: 0.5\nquoted: '9:30'\n")
    assert doc.data == {"cutoff": "14:00", "days": "1:5", "years": ["2026:2027"], "plain": 42, "ratio": 0.5,
                        "quoted": "9:30"}
