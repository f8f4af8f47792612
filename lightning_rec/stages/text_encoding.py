"""The encode stage: embed every item's text once with a language model and cache the table.

Run with `lightning-rec predict` and the same data YAML as every other stage. The module brings its
own predict loader over the catalogue's items (the DataModule defers to it), so under DDP each
process encodes a shard and the results are gathered back into item order by item index.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from lightning_rec.data.item_text import DEFAULT_TEMPLATE, render_item_texts, texts_fingerprint
from lightning_rec.distributed import gather_rows
from lightning_rec.encoders.embedding_cache import cache_status, write_embeddings
from lightning_rec.encoders.plm import (
    DEFAULT_MODEL,
    DType,
    LanguageModel,
    Pooling,
    model_fingerprint,
    resolve_model_path,
)


class ItemTexts(Dataset):
    """Item indices and their texts, tokenized a whole batch at a time (in loader workers if any)."""

    def __init__(self, items: torch.Tensor, texts: list[str], tokenize):
        self.items, self.texts, self.tokenize = items, texts, tokenize

    def __len__(self) -> int:
        return len(self.items)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        items = self.items[torch.as_tensor(indices)]
        return {"item": items, **self.tokenize([self.texts[i - 1] for i in items.tolist()])}


def _keep_batch(batch):
    return batch


class ItemTextEncoder(L.LightningModule):
    """Writes `output`: the [N + 1, d] text embeddings of items 1..N (row 0 zeros) with metadata.

    When `output` already holds an intact table made from the same model files, texts, pooling and
    length, nothing is loaded or run; any difference, or a corrupt file, re-encodes everything.
    """

    def __init__(
        self,
        output: str,
        model_name: str = DEFAULT_MODEL,
        template: str = DEFAULT_TEMPLATE,
        pooling: Pooling = "mean",
        max_length: int = 128,
        batch_size: int = 64,
        dtype: DType = "float32",
        num_workers: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.language_model: LanguageModel | None = None
        self.texts: list[str] = []
        self.up_to_date = False

    def expected_metadata(self, model_path: str) -> dict:
        h = self.hparams
        return {
            "model": h.model_name,
            "model_sha256": model_fingerprint(model_path),
            "texts_sha256": texts_fingerprint(self.texts),
            "num_items": len(self.texts),
            "template": h.template,
            "pooling": h.pooling,
            "max_length": h.max_length,
            "dtype": h.dtype,
        }

    def setup(self, stage: str) -> None:
        if stage != "predict":
            raise ValueError(f"ItemTextEncoder has nothing to {stage}; run it with `lightning-rec predict`")
        self.texts = render_item_texts(self.trainer.datamodule.catalog.info, self.hparams.template)
        model_path = resolve_model_path(self.hparams.model_name)
        self.metadata = self.expected_metadata(model_path)
        status = cache_status(self.hparams.output, self.metadata)
        self.up_to_date = status == "current"
        reason = {
            "current": "is up to date (same model, texts and options): nothing to encode",
            "missing": "does not exist: encoding",
            "changed": "was made from other inputs: re-encoding",
            "corrupt": "is corrupt (unreadable or failing its checksum): re-encoding",
        }
        rank_zero_info(f"{self.hparams.output} {reason[status]}")
        if not self.up_to_date and self.language_model is None:
            h = self.hparams
            self.language_model = LanguageModel(model_path, h.pooling, h.max_length, h.dtype).eval()
            self.metadata["dim"] = self.language_model.dim

    def predict_dataloader(self) -> DataLoader:
        """Items in order of text length: a batch is padded to its longest text, so batches of
        similar lengths waste little (rows are placed by item index at the end)."""
        by_length = sorted(range(1, len(self.texts) + 1), key=lambda item: len(self.texts[item - 1]))
        items = torch.tensor(by_length) if not self.up_to_date else torch.zeros(0, dtype=torch.long)
        tokenize = self.language_model.tokenize if self.language_model is not None else None
        return DataLoader(
            ItemTexts(items, self.texts, tokenize),
            batch_size=self.hparams.batch_size,
            collate_fn=_keep_batch,
            num_workers=self.hparams.num_workers,
        )

    def on_predict_epoch_start(self) -> None:
        self._items, self._vectors = [], []

    def predict_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """Encodes a batch and keeps it for the gather at the end; returns the items it encoded."""
        self._items.append(batch["item"])
        self._vectors.append(self.language_model(batch["input_ids"], batch["attention_mask"]))
        return batch["item"]

    def on_predict_epoch_end(self) -> None:
        if self.up_to_date:
            return
        items, vectors = self._gather()
        if self.trainer.is_global_zero:
            table = vectors.new_zeros(len(self.texts) + 1, vectors.shape[-1])
            table[items] = vectors  # shards come back in any order: place rows by item index
            seen = torch.zeros(len(table), dtype=torch.bool, device=items.device).index_fill_(0, items, True)
            if not seen[1:].all():
                raise RuntimeError(f"encode stage: {int((~seen[1:]).sum())} items were not encoded; nothing written")
            write_embeddings(self.hparams.output, table, self.metadata)
            rank_zero_info(f"wrote {self.hparams.output}: {len(self.texts)} items x {vectors.shape[-1]} dims")
        self._items, self._vectors = [], []
        self.trainer.strategy.barrier()

    def _gather(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All processes' (item, vector) rows (predict shards have unequal sizes)."""
        items = torch.cat(self._items) if self._items else torch.zeros(0, dtype=torch.long, device=self.device)
        vectors = (
            torch.cat(self._vectors) if self._vectors else torch.zeros(0, self.language_model.dim, device=self.device)
        )
        return gather_rows(items), gather_rows(vectors)
