"""How ``dovetail status`` writes an uptime: with its unit, to the precision an operator reads."""

from __future__ import annotations

import pytest

from dovetail.cli.master_cmds import duration


@pytest.mark.parametrize("seconds, shown", [
    (0, "0s"), (45.4, "45s"), (59, "59s"), (60, "1m00s"), (725, "12m05s"), (3599, "59m59s"),
    (3600, "1h00m"), (11520, "3h12m"), (86399, "23h59m"), (86400, "1d00h"), (187200, "2d04h"),
    (None, "-"), (-3, "0s"),
])
def test_uptime_has_a_unit(seconds: float | None, shown: str) -> None:
    assert duration(seconds) == shown
