"""The `replay:` section of taps.yaml: defaults, and one `file:line` error per mistake."""

from __future__ import annotations

import pytest

from controltower.errors import ConfigError
from controltower.replayconfig import loads_replay


def test_defaults_and_money_flows_need_approval():
    cfg = loads_replay("taps: []\nreplay:\n  flows:\n    order: {produces: order.erp_posted}\n"
                       "    refund: {produces: return.refund_posted}\n    credit: {produces: credit.posted, approval: false}\n")
    assert (cfg.flows["order"].approval, cfg.flows["order"].rate_per_minute) == (False, 60)
    assert cfg.flows["refund"].approval is True and cfg.flows["credit"].approval is False
    assert cfg.raw_store_days == 7 and cfg.endpoints == {}
    assert loads_replay("taps: []\n").flows == {}


@pytest.mark.parametrize(("text", "error"), [
    ("replay:\n  flows:\n    order: {produces: posted}\n", "taps.yaml:3: replay.flows.order.produces: 'posted' is not a milestone"),
    ("replay:\n  flows:\n    order:\n      produces: order.x\n      rate_per_minute: 0\n",
     "taps.yaml:5: replay.flows.order.rate_per_minute: 0 is not a whole number"),
    ("replay:\n  endpoints:\n    order: {url: http://x}\n", "taps.yaml:3: replay.endpoints.order: name environment variables"),
    ("replay:\n  endpoints:\n    order: {url_env: 'not a name'}\n", "taps.yaml:3: replay.endpoints.order.url_env"),
    ("replay:\n  flow: {}\n", "taps.yaml:2: replay.flow: unknown key"),
    ("replay:\n  raw_store_days: 0\n", "taps.yaml:2: replay.raw_store_days: 0 is not a number of days"),
])
def test_mistakes_are_one_line_with_file_and_line(text, error):
    with pytest.raises(ConfigError) as info:
        loads_replay(text, "taps.yaml")
    assert str(info.value).startswith(error), str(info.value)
