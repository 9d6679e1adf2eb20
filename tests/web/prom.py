"""A strict reader of the Prometheus text exposition format (0.0.4) for the tests of ``/metrics``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


@dataclass
class Exposition:
    types: dict[str, str] = field(default_factory=dict)
    helps: dict[str, str] = field(default_factory=dict)
    samples: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)

    def value(self, name: str, **labels: str) -> float:
        """The one sample of ``name`` whose labels include ``labels``."""
        found = [v for lab, v in self.samples.get(name, []) if labels.items() <= lab.items()]
        assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
        return found[0]

    def labelled(self, name: str, label: str) -> dict[str, float]:
        return {lab[label]: v for lab, v in self.samples.get(name, [])}


def parse(text: str) -> Exposition:
    """Raises AssertionError on anything a Prometheus server would reject."""
    assert text.endswith("\n")
    out = Exposition()
    seen_samples: set[str] = set()
    keys: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in out.helps, f"second HELP for {name}"
            out.helps[name] = help_text
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in TYPES and name not in out.types and name not in seen_samples, line
            out.types[name] = kind
        elif line.startswith("#") or not line:
            continue
        else:
            m = SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            name, raw, value = m.groups()
            labels: dict[str, str] = {}
            rest = raw or ""
            while rest:
                lm = LABEL.match(rest)
                assert lm, f"bad labels in {line!r}"
                labels[lm.group(1)] = lm.group(2).replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
                rest = rest[lm.end():]
            key = (name, tuple(sorted(labels.items())))
            assert key not in keys, f"duplicate sample {line!r}"
            keys.add(key)
            seen_samples.add(name)
            assert name in out.types, f"sample before its TYPE: {line!r}"
            out.samples.setdefault(name, []).append((labels, float(value)))
    return out
