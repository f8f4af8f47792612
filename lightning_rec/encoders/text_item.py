"""Item encoders from text: cached language-model vectors through a learned adaptor (TextItemEncoder),
the same fused with ID embeddings (HybridItemEncoder), and the language model itself trained end to
end (PLMItemEncoder). Text gives every item a vector, including items never seen in training."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from lightning_rec.data.item_text import DEFAULT_TEMPLATE, render_item_texts, texts_fingerprint
from lightning_rec.encoders.embedding_cache import EmbeddingCacheError, read_embeddings
from lightning_rec.encoders.item import ItemEncoder
from lightning_rec.encoders.plm import DEFAULT_MODEL, LanguageModel, Pooling


class WhiteningMoEAdaptor(nn.Module):
    """UniSRec's adaptor from language-model space to the recommender's: `num_experts` parametric
    whitening projections (x - b_k) W_k mixed by a softmax gate on x. The learned centring b_k
    removes the common direction that makes raw sentence vectors anisotropic (all cosines high)."""

    def __init__(self, in_dim: int, dim: int, num_experts: int = 8, dropout: float = 0.2, init_std: float = 0.02):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_experts, in_dim))
        self.weight = nn.Parameter(torch.randn(num_experts, in_dim, dim) * init_std)
        self.gate = nn.Linear(in_dim, num_experts, bias=False)
        nn.init.zeros_(self.gate.weight)  # start from an even mixture
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[M, in_dim] -> [M, dim]."""
        x = self.drop(x)
        experts = torch.einsum("mi,kid->mkd", x, self.weight) - torch.einsum("ki,kid->kd", self.bias, self.weight)
        gates = torch.softmax(self.gate(x), dim=-1)
        return torch.einsum("mk,mkd->md", gates, experts)


def load_checked_embeddings(path: str, catalog) -> torch.Tensor:
    """The cached table, checked against the catalogue: N + 1 rows, and (when the catalogue has item
    text) made from these very items' texts, so a cache from other data cannot be used by mistake."""
    table, metadata = read_embeddings(path)
    if table.shape[0] != catalog.num_items + 1:
        raise EmbeddingCacheError(
            f"embedding cache {path} has {table.shape[0]} rows, but the data has {catalog.num_items} items "
            f"(+1 padding row = {catalog.num_items + 1}); re-run the encode stage with this data YAML"
        )
    template = metadata.get("template")
    if catalog.info is not None and template is not None:
        if texts_fingerprint(render_item_texts(catalog.info, template)) != metadata.get("texts_sha256"):
            raise EmbeddingCacheError(
                f"embedding cache {path} was made from other item texts than this data's; "
                "re-run the encode stage with this data YAML"
            )
    return table


class TextItemEncoder(ItemEncoder):
    """Frozen language-model vectors from the encode stage's cache, through the whitening MoE adaptor.
    Only the adaptor trains, so the model transfers to items whose text it has never seen."""

    def __init__(
        self, embeddings: str, dim: int = 64, num_experts: int = 8, dropout: float = 0.2, init_std: float = 0.02
    ):
        super().__init__()
        self.embeddings, self.dim = embeddings, dim
        self.num_experts, self.dropout, self.init_std = num_experts, dropout, init_std
        self.adaptor: WhiteningMoEAdaptor | None = None

    def build(self, catalog) -> None:
        table = load_checked_embeddings(self.embeddings, catalog)
        self.register_buffer("text_vectors", table, persistent=False)
        self.adaptor = WhiteningMoEAdaptor(table.shape[1], self.dim, self.num_experts, self.dropout, self.init_std)

    @property
    def is_built(self) -> bool:
        return self.adaptor is not None

    def forward(self) -> torch.Tensor:
        vectors = self.adaptor(self.text_vectors[1:])
        return torch.cat([vectors.new_zeros(1, self.dim), vectors])


ColdItems = Literal["none", "map", "gate", "dropout", "map_dropout"]


class HybridItemEncoder(TextItemEncoder):
    """ID embedding + adapted text vector, summed. Items without a single training event get no ID
    vector (only text): an untrained ID row is noise at best.

    `cold` (experimental, one of each measured): how an item without an ID vector is represented.
    none: text alone. map: text + a linear map of it into the ID space, fitted to the warm items' ID
    vectors (`alignment_loss`). gate: (1 - g) text + g ID with g = sigmoid of the item's text vector,
    0 without ID. dropout: `id_dropout` of the IDs left out per step, text-only items scaled by a
    learned scalar. map_dropout: `id_dropout` of the IDs replaced per step by the map of the text.
    """

    def __init__(
        self,
        embeddings: str,
        dim: int = 64,
        num_experts: int = 8,
        dropout: float = 0.2,
        init_std: float = 0.02,
        cold: ColdItems = "none",
        id_dropout: float = 0.0,
    ):
        super().__init__(embeddings, dim, num_experts, dropout, init_std)
        self.cold, self.id_dropout = cold, id_dropout

    def build(self, catalog) -> None:
        super().build(catalog)
        self.id_embedding = nn.Embedding(catalog.num_items + 1, self.dim, padding_idx=0)
        nn.init.normal_(self.id_embedding.weight, std=self.init_std)
        self.register_buffer("has_id", (catalog.popularity > 0).unsqueeze(1))  # saved: restored with checkpoints
        self.text_to_id = nn.Linear(self.dim, self.dim)
        nn.init.zeros_(self.text_to_id.weight)
        nn.init.zeros_(self.text_to_id.bias)
        self.gate = nn.Linear(self.text_vectors.shape[1], 1)
        self.text_scale = nn.Parameter(torch.ones(()))
        self.alignment = None

    def forward(self) -> torch.Tensor:
        text, ids = super().forward(), self.id_embedding.weight
        keep = self.has_id
        if self.training and self.id_dropout > 0 and self.cold in ("dropout", "map_dropout"):
            keep = keep & (torch.rand_like(keep, dtype=torch.float) >= self.id_dropout)
        if self.cold == "map":
            mapped = self.text_to_id(text.detach())
            if self.training:
                warm = self.has_id.squeeze(1)
                self.alignment = (mapped[warm] - ids[warm].detach()).pow(2).sum(1).mean()
            return text + torch.where(keep, ids, mapped)
        if self.cold == "gate":
            g = torch.sigmoid(self.gate(self.text_vectors)) * keep
            return (1 - g) * text + g * ids
        if self.cold == "dropout":
            return torch.where(keep, text + ids, self.text_scale * text)
        if self.cold == "map_dropout":
            return text + torch.where(keep, ids, self.text_to_id(text))
        return text + ids * keep

    def alignment_loss(self) -> torch.Tensor | None:
        """The map's regression loss of the last training forward (cold == "map"), else None."""
        return self.alignment


class PLMItemEncoder(ItemEncoder):
    """The language model itself inside the recommender, its top `fine_tune_layers` trained end to end
    with the adaptor (a GPU job: every step re-encodes all items' texts, `chunk_size` at a time).
    Token ids are kept as buffers, so checkpoints load without the data. In eval mode the table is
    computed once and reused (as a constant) until the module trains again."""

    def __init__(
        self,
        dim: int = 64,
        model_name: str = DEFAULT_MODEL,
        template: str = DEFAULT_TEMPLATE,
        fine_tune_layers: int = 1,
        pooling: Pooling = "mean",
        max_length: int = 64,
        num_experts: int = 8,
        dropout: float = 0.2,
        chunk_size: int = 512,
    ):
        super().__init__()
        self.dim, self.template, self.chunk_size = dim, template, chunk_size
        self.language_model = LanguageModel(model_name, pooling, max_length, fine_tune_layers=fine_tune_layers)
        self.adaptor = WhiteningMoEAdaptor(self.language_model.dim, dim, num_experts, dropout)
        self._eval_table: torch.Tensor | None = None
        self.register_load_state_dict_post_hook(lambda module, keys: setattr(module, "_eval_table", None))

    def build(self, catalog) -> None:
        length = self.language_model.max_length
        if catalog.info is None:  # loading a checkpoint: the buffers' values come from it
            tokens = {
                k: torch.zeros(catalog.num_items, length, dtype=torch.long) for k in ("input_ids", "attention_mask")
            }
        else:
            texts = render_item_texts(catalog.info, self.template)
            encoded = self.language_model.tokenizer(
                texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt"
            )
            tokens = {k: encoded[k] for k in ("input_ids", "attention_mask")}
        self.register_buffer("input_ids", tokens["input_ids"])
        self.register_buffer("attention_mask", tokens["attention_mask"])

    @property
    def is_built(self) -> bool:
        return hasattr(self, "input_ids")

    def train(self, mode: bool = True):
        self._eval_table = None
        return super().train(mode)

    def forward(self) -> torch.Tensor:
        if not self.training and self._eval_table is not None:
            return self._eval_table
        vectors = []
        for start in range(0, len(self.input_ids), self.chunk_size):
            mask = self.attention_mask[start : start + self.chunk_size]
            width = int(mask.sum(1).max())  # drop the columns that are padding in the whole chunk
            vectors.append(
                self.language_model(self.input_ids[start : start + self.chunk_size, :width], mask[:, :width])
            )
        table = self.adaptor(torch.cat(vectors))
        table = torch.cat([table.new_zeros(1, self.dim), table])
        if not self.training:
            self._eval_table = table = table.detach()
        return table
