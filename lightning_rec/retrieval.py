"""Top-k retrieval of items for user states over catalogues of any size (docs/scale.md).

Ranking metrics need every item's score, but a service, or a user who wants the top items of a
million-item catalogue, needs only the k best: `ExactTopK` finds them exactly in chunks of the item
table, so no [users, items] block larger than `max_scores` floats is ever built; `FaissTopK` searches
an approximate inner-product index (faiss IVF, optional dependency `faiss-cpu`), far faster per query
on large catalogues. Both mask item 0 (padding) and each row's history, as `scoring.mask_scores` does.
"""

from __future__ import annotations

import math

import torch

from lightning_rec.data.errors import DataError


def drop_history(scores: torch.Tensor, items: torch.Tensor, history: torch.Tensor | None, k: int):
    """The k best (scores, items) [B, k] of candidates `scores`/`items` [B, C] (best first), those
    that are padding (0) or among each row's `history` [B, H] removed."""
    blocked = items == 0
    if history is not None:
        blocked |= (items.unsqueeze(-1) == history.unsqueeze(1)).any(-1)
    scores = scores.masked_fill(blocked, float("-inf"))
    best = scores.topk(k, dim=1)
    return best.values, items.gather(1, best.indices)


class ExactTopK:
    """Exact top-k over the item table [N + 1, D], scored in chunks of items whose [B, chunk] block
    holds at most `max_scores` floats; the running best k of every row is kept between chunks."""

    def __init__(self, items: torch.Tensor, max_scores: int = 50_000_000):
        self.items, self.max_scores = items, max_scores

    def search(self, states: torch.Tensor, k: int, history: torch.Tensor | None = None):
        """(scores, items) [B, k], best first, of user `states` [B, D]."""
        depth = k + 1 + (0 if history is None else history.shape[1])  # enough to survive masking
        chunk = max(depth, self.max_scores // max(len(states), 1))
        best_scores = states.new_full((len(states), 0), float("-inf"))
        best_items = torch.zeros(len(states), 0, dtype=torch.long, device=states.device)
        for start in range(0, len(self.items), chunk):
            scores = states @ self.items[start : start + chunk].T
            top = scores.topk(min(depth, scores.shape[1]), dim=1)
            best_scores = torch.cat([best_scores, top.values], 1)
            best_items = torch.cat([best_items, top.indices + start], 1)
            if best_scores.shape[1] > depth:
                keep = best_scores.topk(depth, dim=1).indices
                best_scores, best_items = best_scores.gather(1, keep), best_items.gather(1, keep)
        return drop_history(best_scores, best_items, history, k)


class FaissTopK:
    """Approximate top-k by inner product: a faiss IVF-Flat index over items 1..N with `lists`
    clusters (default 4 sqrt(N)), `probes` of them searched per query. Recall against `ExactTopK`
    grows with `probes` (benchmarks/scale.py measures it)."""

    def __init__(self, items: torch.Tensor, lists: int | None = None, probes: int = 32, seed: int = 0):
        try:
            import faiss
        except ImportError as error:
            raise DataError("the ANN index needs faiss: pip install faiss-cpu") from error
        vectors = items[1:].detach().float().contiguous().numpy()
        lists = lists or max(1, int(4 * math.sqrt(len(vectors))))
        if lists > len(vectors):
            raise DataError(f"FaissTopK.lists={lists} exceeds the catalogue's {len(vectors)} items")
        quantizer = faiss.IndexFlatIP(vectors.shape[1])
        self.index = faiss.IndexIVFFlat(quantizer, vectors.shape[1], lists, faiss.METRIC_INNER_PRODUCT)
        self.index.cp.seed = seed
        self.index.train(vectors)
        self.index.add(vectors)
        self.index.nprobe = probes

    def search(self, states: torch.Tensor, k: int, history: torch.Tensor | None = None):
        """(scores, items) [B, k], best first, of user `states` [B, D]; -inf / 0 where fewer were found."""
        extra = 0 if history is None else history.shape[1]
        scores, found = self.index.search(states.detach().float().contiguous().numpy(), k + extra)
        found = torch.from_numpy(found) + 1  # faiss's -1 (nothing found) becomes padding
        scores = torch.from_numpy(scores).masked_fill(found == 0, float("-inf"))
        return drop_history(scores, found, history, k)
