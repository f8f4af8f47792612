"""What every data source returns (`RawData`) and promises (`DataSource`)."""

from __future__ import annotations

import abc
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lightning_rec.data.errors import DataError

#: Mixed into every fingerprint; bump it when parsing changes so old caches are rebuilt.
PARSER_VERSION = 1


@dataclass
class RawData:
    """Interactions and item metadata with the dataset's original ids, before any preprocessing.

    interactions: columns "user", "item", "timestamp" (int64 or float64) and optionally
        "rating" (float64); one row per event.
    items: column "item" plus text columns (e.g. "title", "genres"), or None.
    name: short dataset name, e.g. "ml-latest-small".
    """

    interactions: pd.DataFrame
    items: pd.DataFrame | None
    name: str


class DataSource(abc.ABC):
    """A place interactions come from. Subclasses are chosen in YAML by class_path."""

    @abc.abstractmethod
    def load(self) -> RawData:
        """Read and validate the input; raise DataError naming file, row or field on bad input."""

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """A stable hex string that changes whenever the input files or the source options change
        (sha256 over the files' bytes + the options); used as the preprocessing cache key."""


def fingerprint_of(source: object, options: Mapping[str, Any], files: Iterable[Path | bytes]) -> str:
    """sha256 over the parser version, the source's class, its options and each input's bytes.

    Files are given as paths (streamed, so large zips are fine) or as bytes already in memory;
    each is length-prefixed so that moving bytes from one file to the next changes the hash.
    """
    digest = hashlib.sha256()
    header = {"parser": PARSER_VERSION, "class": type(source).__qualname__, "options": dict(options)}
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for item in files:
        if isinstance(item, bytes):
            digest.update(len(item).to_bytes(8, "little"))
            digest.update(item)
            continue
        if not item.is_file():
            raise DataError(f"{item}: file not found")
        digest.update(item.stat().st_size.to_bytes(8, "little"))
        with item.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
