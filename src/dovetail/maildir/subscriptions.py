"""The ``subscriptions`` file as Dovecot 2.3 writes it: ``V\\t2`` and an empty line, then one mailbox
per line with hierarchy levels separated by TAB, each level in modified UTF-7. Version 1 files (one
name per line, '.'-separated or '/'-separated) are read too."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from dovetail.storage.names import decode_mutf7, encode_mutf7

SUBSCRIPTIONS = "subscriptions"


def read(path: Path) -> list[str]:
    try:
        text = path.read_text("utf-8", "surrogateescape")
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    names: list[str] = []
    if lines and lines[0] == "V\t2":
        for line in lines[1:]:
            if not line:
                continue
            try:
                names.append("/".join(decode_mutf7(p) for p in line.split("\t")))
            except ValueError:
                continue
    else:
        for line in lines:
            line = line.strip()
            if not line:
                continue
            try:
                names.append(decode_mutf7(line).replace(".", "/") if "/" not in line else decode_mutf7(line))
            except ValueError:
                continue
    return list(dict.fromkeys(names))


def write(path: Path, names: list[str]) -> None:
    body = "".join("\t".join(encode_mutf7(p) for p in n.split("/")) + "\n" for n in names)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text("V\t2\n\n" + body, "utf-8")
    os.replace(tmp, path)
