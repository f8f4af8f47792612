"""Top-k retrieval: the chunked exact search equals ranking the whole catalogue; the faiss index
equals it when it searches every list and stays close when it searches few."""

from __future__ import annotations

import pytest
import torch

from lightning_rec.data.errors import DataError
from lightning_rec.retrieval import ExactTopK, FaissTopK
from lightning_rec.scoring import mask_scores


def whole_catalogue_top_k(states, items, history, k):
    return mask_scores(states @ items.T, history).topk(k, dim=1)


@pytest.mark.parametrize("max_scores", [10**9, 7 * 50])  # one chunk, or chunks of 50 items
def test_exact_top_k_in_chunks_equals_ranking_the_whole_catalogue(max_scores):
    generator = torch.Generator().manual_seed(0)
    items, states = torch.randn(1001, 16, generator=generator), torch.randn(7, 16, generator=generator)
    history = torch.stack([(states[i] @ items.T).topk(5).indices for i in range(7)])  # each row's own best items
    history[0, 2:] = 0  # a shorter history, padded
    scores, found = ExactTopK(items, max_scores).search(states, 10, history)
    expected = whole_catalogue_top_k(states, items, history, 10)
    assert torch.equal(found, expected.indices) and torch.allclose(scores, expected.values)
    assert not (found.unsqueeze(-1) == history.unsqueeze(1)).any() and (found != 0).all()


def clustered_items(n: int = 5001, clusters: int = 50, dim: int = 16) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    centres = torch.randn(clusters, dim, generator=generator) * 3
    return centres[torch.randint(clusters, (n,), generator=generator)] + torch.randn(n, dim, generator=generator)


def test_faiss_top_k_equals_exact_searching_every_list_and_recalls_most_searching_few():
    items = clustered_items()
    states = items[torch.randint(1, len(items), (64,), generator=torch.Generator().manual_seed(2))]
    history = torch.randint(1, len(items), (64, 3), generator=torch.Generator().manual_seed(3))
    _, exact = ExactTopK(items).search(states, 10, history)
    _, every = FaissTopK(items, lists=40, probes=40).search(states, 10, history)
    assert torch.equal(every, exact)
    _, few = FaissTopK(items, lists=40, probes=1).search(states, 10, history)
    recall = (few.unsqueeze(-1) == exact.unsqueeze(1)).any(-1).float().mean()
    assert 0.8 < recall < 1.0  # 0.93: one list of 40 misses a few of the best items
    assert not (few.unsqueeze(-1) == history.unsqueeze(1)).any() and (few != 0).all()


def test_an_index_of_more_lists_than_items_is_a_clear_error():
    with pytest.raises(DataError, match="lists=20 exceeds the catalogue's 10 items"):
        FaissTopK(torch.randn(11, 4), lists=20)
