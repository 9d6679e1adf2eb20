"""The screening cache shared by the MX workers: verdicts, TTLs, bounds."""

from __future__ import annotations

from pathlib import Path

from dovetail.intake.screen.cache import ScreenCache


def test_pass_and_dnsbl_ttls(tmp_path: Path) -> None:
    cache = ScreenCache(tmp_path / "screen.sqlite")
    cache.record("192.0.2.1", "PASS", score=0, pass_until=2000.0, dnsbl_until=1500.0, now=1000.0)
    entry = cache.get("192.0.2.1")
    assert entry is not None and entry.passed(1999.0) and not entry.passed(2001.0)
    assert entry.dnsbl_fresh(1400.0) and not entry.dnsbl_fresh(1600.0)
    # A later pregreet failure ends the pass; the DNSBL score, not asked again, stays.
    cache.record("192.0.2.1", "PREGREET", "EHLO x", pass_until=0.0, now=1100.0)
    entry = cache.get("192.0.2.1")
    assert entry is not None and entry.verdict == "PREGREET" and not entry.passed(1200.0) and entry.score == 0
    other = ScreenCache(tmp_path / "screen.sqlite")  # another worker sees the same rows
    assert other.get("192.0.2.1") == entry
    assert other.flush("192.0.2.1") == 1 and cache.get("192.0.2.1") is None


def test_bounded(tmp_path: Path) -> None:
    cache = ScreenCache(tmp_path / "screen.sqlite", max_rows=50)
    for i in range(120):
        cache.record(f"192.0.2.{i}", "PASS", pass_until=1e12, now=1000.0 + i)
    cache.prune(now=2000.0)
    assert cache.count() == 50
    assert cache.get("192.0.2.119") is not None and cache.get("192.0.2.0") is None  # the least recently seen go
    cache.record("198.51.100.1", "DNSBL", now=0.0)  # a refusal is kept a day, then goes
    cache.prune(now=90000.0)
    assert cache.get("198.51.100.1") is None
    assert cache.flush() == 50
