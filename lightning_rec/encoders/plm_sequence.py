"""A language model over a user's history rendered as text: the network of the seed document (BERT
over behaviour text, then a linear layer over items, trained with cross-entropy).

Paired with an `IDItemEncoder` of the same `dim`, the recommender's scores `hidden @ items.T` are that
linear layer over items. Running a language model per position would cost L forward passes, so this
encoder returns only the state after the last event ([B, 1, D]); the recommender then trains on
each window's last target.
"""

from __future__ import annotations

import torch
from torch import nn

from lightning_rec.data.item_text import render_item_texts
from lightning_rec.encoders.plm import DEFAULT_MODEL, LanguageModel, Pooling
from lightning_rec.encoders.sequence import SequenceEncoder


class PLMHistoryEncoder(SequenceEncoder):
    """Renders the last `max_items` items of each history as "text 1 [SEP] text 2 [SEP] ..." (each item
    at most `item_max_tokens` tokens, oldest tokens dropped first beyond `max_length`) and encodes it.

    Item token ids are tokenized once in `build` and kept as buffers, so a batch's text is assembled by
    tensor indexing, and checkpoints load without the data.
    """

    reads_item_ids = True  # SequentialRecommender passes item ids [B, L], not item vectors

    def __init__(
        self,
        dim: int = 64,
        model_name: str = DEFAULT_MODEL,
        template: str = "{title}",
        max_items: int = 20,
        item_max_tokens: int = 16,
        max_length: int = 256,
        pooling: Pooling = "mean",
        fine_tune_layers: int = -1,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.dim, self.causal = dim, True
        self.template, self.max_items, self.item_max_tokens = template, max_items, item_max_tokens
        self.language_model = LanguageModel(model_name, pooling, max_length, fine_tune_layers=fine_tune_layers)
        tokenizer = self.language_model.tokenizer
        self.separator = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        self.start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        if item_max_tokens < 2:
            raise ValueError(f"item_max_tokens must be at least 2 (one token and the separator), got {item_max_tokens}")
        if self.separator is None:
            raise ValueError(
                f"tokenizer of {model_name!r} has neither a [SEP] nor an end-of-sequence token to separate items"
            )
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(self.language_model.dim, dim)

    def build(self, catalog) -> None:
        """Token ids of every item's text [N + 1, item_max_tokens], each ending with the separator;
        row 0 (padding) is empty."""
        n, width = catalog.num_items, self.item_max_tokens
        tokens = torch.full((n + 1, width), self.pad, dtype=torch.long)
        lengths = torch.zeros(n + 1, dtype=torch.long)
        if catalog.info is not None:
            texts = render_item_texts(catalog.info, self.template)
            encoded = self.language_model.tokenizer(
                texts,
                add_special_tokens=False,
                truncation=True,
                max_length=width - 1,
                padding="max_length",
                return_tensors="pt",
            )
            counts = encoded["attention_mask"].sum(1)
            tokens[1:, : width - 1] = encoded["input_ids"]
            tokens[1:].scatter_(1, counts.unsqueeze(1), self.separator)
            lengths[1:] = counts + 1
        self.register_buffer("item_tokens", tokens)
        self.register_buffer("item_lengths", lengths)

    def render(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask [B, T] of the histories: start token, then the most recent items'
        tokens, oldest first; when too long, the oldest tokens go."""
        recent = input[:, -self.max_items :]
        tokens = self.item_tokens[recent].flatten(1)  # [B, k * width]
        valid = (
            torch.arange(self.item_max_tokens, device=input.device) < self.item_lengths[recent].unsqueeze(-1)
        ).flatten(1)
        order = torch.sort((~valid).to(torch.int8), dim=1, stable=True).indices  # real tokens first, in order
        tokens, count = tokens.gather(1, order), valid.sum(1)
        room = self.language_model.max_length - 1
        width = int(min(count.max().clamp(min=1), room))
        skip = (count - room).clamp(min=0).unsqueeze(1)  # oldest tokens beyond the budget
        index = (torch.arange(width, device=input.device) + skip).clamp(max=tokens.shape[1] - 1)
        kept = torch.arange(width, device=input.device) < (count - skip.squeeze(1)).unsqueeze(1)
        body = tokens.gather(1, index).masked_fill(~kept, self.pad)
        parts, masks = [body], [kept]
        if self.start is not None:
            parts.insert(0, torch.full_like(body[:, :1], self.start))
            masks.insert(0, torch.ones_like(kept[:, :1]))
        return torch.cat(parts, 1), torch.cat(masks, 1).long()

    def forward(self, input: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """Item ids [B, L] -> the state after the last event [B, 1, dim]."""
        ids, mask = self.render(input)
        return self.head(self.drop(self.language_model(ids, mask))).unsqueeze(1)
