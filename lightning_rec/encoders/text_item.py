"""Item encoders from text: cached language-model vectors through a learned adaptor (TextItemEncoder),
the same fused with ID embeddings (HybridItemEncoder), and the language model itself trained end to
end (PLMItemEncoder). Text gives every item a vector, including items never seen in training."""

from __future__ import annotations

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


class HybridItemEncoder(TextItemEncoder):
    """ID embedding + adapted text vector, summed. Items without a training event have no trained ID
    vector (an untrained row is noise at best). With `id_dropout` > 0 they get `text_to_id` of their
    text in its place, a linear map into the ID space, and each training step that share of the items,
    drawn afresh, swap their ID vector for the map's, so the model learns to score items from text
    alone and the map trains (with 0 they get text alone, and nothing learns to score them). At
    evaluation the vectors of items without ID are multiplied by `cold_scale`: texts the adaptor never
    trained on score lower than the warm texts it was fitted to, and this is the dial of how often new
    items are shown (docs/large-models.md, "The hybrid for catalogues with new items")."""

    def __init__(
        self,
        embeddings: str,
        dim: int = 64,
        num_experts: int = 8,
        dropout: float = 0.2,
        init_std: float = 0.02,
        id_dropout: float = 0.0,
        cold_scale: float = 1.0,
    ):
        if not 0.0 <= id_dropout < 1.0:
            raise ValueError(f"HybridItemEncoder: id_dropout must be in [0, 1), got {id_dropout}")
        if cold_scale <= 0:
            raise ValueError(f"HybridItemEncoder: cold_scale must be positive, got {cold_scale}")
        super().__init__(embeddings, dim, num_experts, dropout, init_std)
        self.id_dropout, self.cold_scale = id_dropout, cold_scale

    def build(self, catalog) -> None:
        super().build(catalog)
        self.id_embedding = nn.Embedding(catalog.num_items + 1, self.dim, padding_idx=0)
        nn.init.normal_(self.id_embedding.weight, std=self.init_std)
        self.register_buffer("has_id", (catalog.popularity > 0).unsqueeze(1))  # saved: restored with checkpoints
        self.text_to_id = nn.Linear(self.dim, self.dim) if self.id_dropout > 0 else None  # trains only then
        if self.text_to_id is not None:
            nn.init.zeros_(self.text_to_id.weight)
            nn.init.zeros_(self.text_to_id.bias)

    def forward(self) -> torch.Tensor:
        text, has_id = super().forward(), self.has_id
        if self.text_to_id is None:
            table = text + self.id_embedding.weight * has_id
        else:
            if self.training:
                has_id = has_id & (torch.rand_like(has_id, dtype=text.dtype) >= self.id_dropout)
            mapped = torch.cat([text.new_zeros(1, self.dim), self.text_to_id(text[1:])])
            table = text + torch.where(has_id, self.id_embedding.weight, mapped)
        if self.training or self.cold_scale == 1.0:
            return table
        return torch.where(self.has_id, table, self.cold_scale * table)


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
