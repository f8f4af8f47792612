"""Item encoders: give every item (1..N, 0 = padding) a vector. The same table embeds the input
sequence and scores candidates, so ID, text and hybrid encoders are interchangeable in YAML."""

from __future__ import annotations

import torch
from torch import nn


class ItemEncoder(nn.Module):
    """Base class. Sized from the data in `build`, because the catalogue is known only once the
    DataModule has loaded; `forward` returns the whole table [num_items + 1, dim]."""

    dim: int

    def build(self, catalog) -> None:  # catalog: lightning_rec.data.datamodule.ItemCatalog
        raise NotImplementedError

    @property
    def is_built(self) -> bool:
        raise NotImplementedError

    def forward(self) -> torch.Tensor:
        raise NotImplementedError


class IDItemEncoder(ItemEncoder):
    """A learned embedding per item id (small init, as SASRec training likes)."""

    def __init__(self, dim: int = 64, init_std: float = 0.02):
        super().__init__()
        self.dim, self.init_std = dim, init_std
        self.embedding: nn.Embedding | None = None

    def build(self, catalog) -> None:
        self.embedding = nn.Embedding(catalog.num_items + 1, self.dim, padding_idx=0)
        nn.init.normal_(self.embedding.weight, std=self.init_std)
        with torch.no_grad():
            self.embedding.weight[0].zero_()

    @property
    def is_built(self) -> bool:
        return self.embedding is not None

    def forward(self) -> torch.Tensor:
        return self.embedding.weight
