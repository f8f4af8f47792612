"""Every file the project writes goes through `atomic_path`: it is written under a temporary name
beside the target and renamed over it, so a reader sees the old file or the new one, never a
half-written one. A crash or `kill -9` mid-write leaves at most a hidden `.<name>.*.tmp` file,
which nothing reads."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write `path`'s new contents to; renamed to `path` (after an fsync, so a
    power cut cannot publish an empty file either) when the block ends, deleted if it raises."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
