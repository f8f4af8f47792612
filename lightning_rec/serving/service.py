"""What the service answers, apart from HTTP: a trained recommender and the data it was trained on turn
users and posted histories (original ids) into top-k items with titles, many queries in one forward pass."""

from __future__ import annotations

import dataclasses

import torch
from torch.nn.utils.rnn import pad_sequence

from lightning_rec.data.errors import DataError
from lightning_rec.retrieval import ExactTopK, FaissTopK
from lightning_rec.stages.pretraining import SequentialRecommender


class UnknownUser(DataError):
    """A user id the data does not have (HTTP 404, where other bad input is 422)."""


@dataclasses.dataclass
class Query:
    """One request once checked: its whole history (item indices 1..N, oldest first) and its k."""

    history: torch.Tensor
    k: int


class RecommendationService:
    """`model` (a built RankingRecommender in eval mode) and `data` (its SequenceDataModule, set up).
    A known user's history is all their events in the data; a posted history may hold at most
    `max_history` items, k is at most `max_k` and `default_k` (the model's top_k) where not given.
    Checks raise DataError naming what is wrong. A sequence model's item table is encoded once (its
    weights stay fixed) and searched exactly in chunks, or with `ann_probes` > 0 through a faiss index
    probing that many lists (`retrieval.py`)."""

    def __init__(
        self,
        model,
        data,
        max_history: int = 1000,
        max_k: int = 100,
        default_k: int | None = None,
        ann_probes: int = 0,
    ):
        self.model, self.data = model, data
        self.max_len, self.max_history = data.hparams.max_len, max_history
        self.max_k = min(max_k, data.data.num_items)
        self.default_k = min(model.hparams.top_k, self.max_k) if default_k is None else default_k
        if not 1 <= self.default_k <= self.max_k:
            raise DataError(f"top_k must be between 1 and max_k={self.max_k}, got {self.default_k}")
        self.item_ids = data.data.item_ids
        info = data.data.item_info
        self.titles = info["title"].tolist() if "title" in info else [None] * len(self.item_ids)
        self._item_index = {str(item): index for index, item in enumerate(self.item_ids, 1)}
        self.items = self.retriever = None
        if isinstance(model, SequentialRecommender):
            with torch.inference_mode():
                self.items = model.item_encoder()
            self.retriever = FaissTopK(self.items, probes=ann_probes) if ann_probes else ExactTopK(self.items)

    def query(self, user=None, items: list | None = None, k: int | None = None) -> Query:
        """The checked query of a known `user` or of the posted history `items` (exactly one of them)."""
        if (user is None) == (items is None):
            raise DataError("give exactly one of 'user' (a user id of the data) or 'items' (a history of item ids)")
        k = self.default_k if k is None else k
        if not 1 <= k <= self.max_k:
            raise DataError(f"'k' must be between 1 and {self.max_k}, got {k}")
        if user is not None:
            index = self.data.user_index(user)
            if index is None:
                raise UnknownUser(f"unknown user id {user!r}: not in the data the model was trained on")
            return Query(self.data.data.user_history(index), k)
        if not items:
            raise DataError("'items' is empty: post at least one item id")
        if len(items) > self.max_history:
            raise DataError(f"'items' has {len(items)} item ids, at most {self.max_history} are served")
        indices = [self._item_index.get(str(item)) for item in items]
        unknown = [item for item, index in zip(items, indices) if index is None]
        if unknown:
            raise DataError(f"unknown item ids {unknown[:10]}{' ...' if len(unknown) > 10 else ''}")
        return Query(torch.tensor(indices), k)

    @torch.inference_mode()
    def top_k(self, queries: list[Query]) -> list[list[dict]]:
        """Each query's top k items (id, title, score), best first, all scored in one forward pass:
        the last `max_len` events left-padded as the model's input, the whole history masked (a
        sequence model's states searched in the item table, any other model's scores ranked)."""
        input = pad_sequence([q.history[-self.max_len :] for q in queries], batch_first=True, padding_side="left")
        history = pad_sequence([q.history for q in queries], batch_first=True)  # padding 0 is masked anyway
        k = max(q.k for q in queries)
        if self.retriever is None:
            scores, items = self.model.score(input, history).topk(k, dim=1)
        else:
            history = history if self.model.hparams.mask_history else None
            scores, items = self.retriever.search(self.model.user_states(input, self.items), k, history)
        return [
            [
                {"item": self.item_ids[item - 1], "title": self.titles[item - 1], "score": score}
                for item, score in zip(row_items[: q.k], row_scores[: q.k])
            ]
            for q, row_items, row_scores in zip(queries, items.tolist(), scores.tolist())
        ]
