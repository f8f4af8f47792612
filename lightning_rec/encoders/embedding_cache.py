"""The item embedding cache: one safetensors file holding the table [N + 1, d] (row 0, padding, is
zeros) and, in its header, JSON metadata saying what produced it plus a checksum of the table.

One file rather than a table plus a separate metadata file, so that the pair can never disagree: it
is replaced atomically as a whole, and a truncated or altered file fails to load or fails its checksum.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import torch

from lightning_rec.atomic import atomic_path
from lightning_rec.data.errors import DataError

_KEY = "lightning_rec"


class EmbeddingCacheError(DataError):
    """An embedding cache that is missing, unreadable, altered, or of the wrong shape; names the file."""


def table_checksum(table: torch.Tensor) -> str:
    return hashlib.sha256(table.contiguous().numpy().tobytes()).hexdigest()


def write_embeddings(path: str | Path, table: torch.Tensor, metadata: dict) -> None:
    """Write the table (float32) with `metadata`, atomically: readers see the old file or the new one."""
    from safetensors.torch import save_file

    table = table.detach().float().cpu().contiguous()
    if table.dim() != 2 or not torch.all(table[0] == 0):
        raise ValueError("an embedding table is [N + 1, d] with row 0 (padding) all zeros")
    header = {_KEY: json.dumps({**metadata, "sha256": table_checksum(table)}, sort_keys=True)}
    with atomic_path(path) as tmp:
        save_file({"embeddings": table}, str(tmp), metadata=header)


def read_embeddings(path: str | Path) -> tuple[torch.Tensor, dict]:
    """The table and its metadata; EmbeddingCacheError if the file is missing, unreadable or altered."""
    from safetensors import safe_open

    path = Path(path).expanduser()
    if not path.is_file():
        raise EmbeddingCacheError(f"embedding cache {path} does not exist (run the encode stage to create it)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = json.loads((handle.metadata() or {})[_KEY])
            table = handle.get_tensor("embeddings")
    except Exception as error:
        raise EmbeddingCacheError(f"embedding cache {path} is unreadable ({type(error).__name__}: {error})") from error
    if table.dim() != 2 or table.dtype != torch.float32:
        raise EmbeddingCacheError(
            f"embedding cache {path}: expected a float32 [N + 1, d] table, got {table.dtype} {list(table.shape)}"
        )
    if metadata.pop("sha256", None) != table_checksum(table):
        raise EmbeddingCacheError(
            f"embedding cache {path}: the table does not match its checksum (file altered or corrupt)"
        )
    return table, metadata


def cache_status(path: str | Path, metadata: dict) -> Literal["current", "missing", "changed", "corrupt"]:
    """Whether `path` is an intact cache made from exactly these inputs: every key of `metadata`
    must match what is stored (the file may record more, e.g. the dimension)."""
    if not Path(path).expanduser().exists():
        return "missing"
    try:
        _, stored = read_embeddings(path)
    except EmbeddingCacheError:
        return "corrupt"
    expected = json.loads(json.dumps(metadata))  # compare as stored: JSON types
    return "current" if {k: stored.get(k) for k in expected} == expected else "changed"
