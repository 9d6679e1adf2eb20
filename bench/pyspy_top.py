#!/usr/bin/env python3
"""Summarise ``py-spy record --format raw`` files: where the samples of one or more processes went.

py-spy's raw format is one collapsed stack per line (``frame;frame;... COUNT``, root first). This prints,
per file (or for all files together with ``--merge``), the functions with the most samples on top of the
stack ("self") and anywhere in the stack ("total"), as a share of the non-idle samples. Idle stacks
(threads parked in epoll/select, a thread pool waiting for work) are counted apart, so the shares say
where the CPU and the blocking system calls went, not where the threads sat waiting.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

IDLE = re.compile(r"select \(selectors\.py|_worker \(concurrent/futures/thread\.py:\d+\)$|Condition\.wait|"
                  r"SimpleQueue\.get|_queue\.SimpleQueue|Event\.wait|time\.sleep|Thread\._wait_for_tstate_lock")


def frame_name(frame: str) -> str:
    """``func (path/file.py:LINE)`` -> ``path/file.py:func`` (lines dropped so a function is one row)."""
    m = re.match(r"(.*) \((.*?):\d+\)$", frame.strip())
    return f"{m.group(2)}:{m.group(1)}" if m else frame.strip()


def load(paths: list[Path]) -> tuple[Counter[str], Counter[str], int, int]:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    busy = idle = 0
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            frames = stack.split(";")
            if IDLE.search(frames[-1]) or IDLE.search(stack.rsplit(";", 1)[-1]):
                idle += n
                continue
            busy += n
            own[frame_name(frames[-1])] += n
            for name in {frame_name(f) for f in frames}:
                total[name] += n
    return own, total, busy, idle


def report(title: str, paths: list[Path], top: int) -> str:
    own, total, busy, idle = load(paths)
    out = [f"== {title}: {busy} busy samples, {idle} idle"]
    if not busy:
        return "\n".join(out)
    out.append("-- self")
    out += [f"{100 * n / busy:6.1f}%  {name}" for name, n in own.most_common(top)]
    out.append("-- total (inclusive)")
    out += [f"{100 * n / busy:6.1f}%  {name}" for name, n in total.most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", type=Path, nargs="+")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--merge", action="store_true", help="one report for all files")
    args = ap.parse_args(argv)
    if args.merge:
        print(report("all", args.files, args.top))
    else:
        for path in args.files:
            print(report(path.name, [path], args.top))
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
