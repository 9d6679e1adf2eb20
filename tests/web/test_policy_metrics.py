"""/metrics counts the MX's rate-limit refusals and greylist verdicts by reason."""

from __future__ import annotations

import time

from dovetail.web import counters

from .conftest import WebEnv


def test_policy_decisions_are_counted_by_reason(web: WebEnv) -> None:
    now = time.time()
    counters.record("ratelimit_connection", 4, at=now)
    counters.record("greylist_new", 3, at=now)
    counters.record("greylist_retried", 1, at=now)
    counters.flush(web.engine)  # type: ignore[arg-type]
    text = web.client.get("/metrics", headers=web.bearer(web.admin_token)).text
    assert "# TYPE dovetail_mx_policy_decisions_total counter" in text
    assert 'dovetail_mx_policy_decisions_total{decision="ratelimit",reason="connection"} 4' in text
    assert 'dovetail_mx_policy_decisions_total{decision="ratelimit",reason="recipient"} 0' in text
    assert 'dovetail_mx_policy_decisions_total{decision="greylist",reason="new"} 3' in text
    assert 'dovetail_mx_policy_decisions_total{decision="greylist",reason="retried"} 1' in text
