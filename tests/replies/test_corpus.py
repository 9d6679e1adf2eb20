"""Classification and extraction accuracy over a labelled corpus of real-world message formats.

Each sample in ``corpus/`` is written in its client's or MTA's own format; ``corpus_labels.toml``
holds what it is. The figures are printed (``pytest -s``) and must stay at or above the thresholds.
Samples marked ``held_out`` were added after the patterns were tuned on the others; their figure is
printed apart, as the fairer estimate of accuracy on mail not seen before.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from dovetail.replies.classify import classify
from dovetail.replies.extract import reply_text
from dovetail.replies.parse import parse

HERE = Path(__file__).parent
LABELS = tomllib.loads((HERE / "corpus_labels.toml").read_text())
KIND_THRESHOLD = 0.95
TEXT_THRESHOLD = 0.85
DATE_THRESHOLD = 0.85


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def evaluate() -> dict[str, dict[str, object]]:
    results = {}
    for name, label in LABELS.items():
        parsed = parse((HERE / "corpus" / f"{name}.eml").read_bytes())
        stripped = reply_text(parsed.text, parsed.html)
        verdict = classify(parsed, stripped)
        addresses = {a for a, _ in verdict.suppress} | {
            r["address"] for r in verdict.details.get("recipients", [])}
        results[name] = {
            "kind": verdict.kind == label["kind"] and verdict.bounce_type == label.get("bounce_type"),
            "got": f"{verdict.kind}/{verdict.bounce_type}",
            "text": _norm(stripped) == _norm(label["text"]) if "text" in label else None,
            "stripped": stripped,
            "date": verdict.details.get("return_date") == label["return_date"] if "return_date" in label else None,
            "return_date": verdict.details.get("return_date"),
            "address": label["address"] in addresses if "address" in label else None,
            "held_out": label.get("held_out", False),
        }
    return results


def _rate(results: dict[str, dict[str, object]], key: str) -> tuple[float, list[str]]:
    scored = {n: r[key] for n, r in results.items() if r[key] is not None}
    misses = [n for n, ok in scored.items() if not ok]
    return (len(scored) - len(misses)) / len(scored), misses


@pytest.fixture(scope="module")
def results() -> dict[str, dict[str, object]]:
    return evaluate()


def test_corpus_is_complete() -> None:
    files = {p.stem for p in (HERE / "corpus").glob("*.eml")}
    assert files == set(LABELS)
    kinds = {label["kind"] for label in LABELS.values()}
    assert kinds == {"human", "auto_reply", "bounce", "unsubscribe", "complaint", "challenge"}


def test_classification_accuracy(results: dict[str, dict[str, object]]) -> None:
    rate, misses = _rate(results, "kind")
    print(f"\nclassification accuracy: {rate:.1%} of {len(results)}; misses: "
          + ", ".join(f"{n} -> {results[n]['got']}" for n in misses))
    held = {n: r for n, r in results.items() if r["held_out"]}
    held_rate, _ = _rate(held, "kind")
    print(f"classification accuracy on the {len(held)} held-out samples: {held_rate:.1%}")
    assert rate >= KIND_THRESHOLD, misses


def test_reply_text_accuracy(results: dict[str, dict[str, object]]) -> None:
    rate, misses = _rate(results, "text")
    print(f"\nreply text accuracy: {rate:.1%}; misses: "
          + "; ".join(f"{n}: {results[n]['stripped']!r}" for n in misses))
    assert rate >= TEXT_THRESHOLD, misses


def test_return_dates(results: dict[str, dict[str, object]]) -> None:
    rate, misses = _rate(results, "date")
    print(f"\nreturn date accuracy: {rate:.1%}; misses: " + ", ".join(f"{n}: {results[n]['return_date']}"
                                                              for n in misses))
    assert rate >= DATE_THRESHOLD, misses


def test_addresses(results: dict[str, dict[str, object]]) -> None:
    rate, misses = _rate(results, "address")
    print(f"\nfailed/suppressed address accuracy: {rate:.1%}; misses: {misses}")
    assert rate == 1.0, misses
