"""Item text for language models: one string per item, rendered from the catalogue's columns."""

from __future__ import annotations

import hashlib
import string

import pandas as pd

from lightning_rec.data.errors import DataError

DEFAULT_TEMPLATE = "{title} ({year}). Genres: {genres}. Tags: {tags}"


def template_fields(template: str) -> list[str]:
    return [field for _, field, _, _ in string.Formatter().parse(template) if field]


def render_item_texts(info: pd.DataFrame, template: str = DEFAULT_TEMPLATE) -> list[str]:
    """Text of items 1..N (element i-1 is item i) from `info` columns named in the template, e.g.
    "{title} ({year}). Genres: {genres}". Missing values render as empty strings."""
    if info is None:
        raise DataError("item text needs the catalogue's item table, and this catalogue has none")
    fields = template_fields(template)
    if not fields:
        raise DataError(f"item text template {template!r} names no column (write columns as {{title}})")
    missing = [f for f in fields if f not in info.columns]
    if missing:
        raise DataError(
            f"item text template {template!r}: the item table has no column {missing}; it has {list(info.columns)}"
        )
    columns = {f: info[f].astype("string").fillna("").tolist() for f in dict.fromkeys(fields)}
    return [template.format(**row) for row in (dict(zip(columns, values)) for values in zip(*columns.values()))]


def texts_fingerprint(texts: list[str]) -> str:
    """SHA-256 of the texts in item order (lengths included, so no two lists collide by concatenation)."""
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode()
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()
