"""A tiny randomly initialised BERT with a character-level WordPiece vocabulary, saved as a Hugging
Face folder: the real AutoModel/AutoTokenizer loading code runs, with no network and in milliseconds."""

from __future__ import annotations

import string
from pathlib import Path


def save_tiny_bert(folder: Path, hidden_size: int = 32, num_layers: int = 2, seed: int = 0) -> str:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = string.ascii_lowercase + string.digits + string.punctuation
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=128,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    return str(folder)
