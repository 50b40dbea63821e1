"""The SHA-256 of a file, read in blocks: the one hash of shipped, downloaded and teacher files
(published checksums, the shipped teachers' pins, torch hub's name prefixes, run provenance)."""
from __future__ import annotations

import hashlib
from pathlib import Path

BLOCK = 1 << 20  # bytes read at a time: a large checkpoint is never held in memory whole


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of the file at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            h.update(block)
    return h.hexdigest()
