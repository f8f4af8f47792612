"""Shared fixtures: small synthetic interaction files with a structure a model can learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

NUM_ITEMS = 40


def write_chain_dataset(path, num_users: int = 80, num_items: int = NUM_ITEMS, seed: int = 0) -> str:
    """Each user walks the item ring i -> i + 1, from a random start, for 6 to 20 steps: the next
    item is fully predictable from the last one, so a working model gets NDCG far above chance."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(num_users):
        start, length = rng.integers(num_items), rng.integers(6, 21)
        for t in range(length):
            rows.append((f"u{user}", int((start + t) % num_items) + 1, 1000 + t, float(rng.integers(1, 6))))
    frame = pd.DataFrame(rows, columns=["user", "item", "timestamp", "rating"])
    frame.to_csv(path, index=False)
    items = pd.DataFrame({"item": np.arange(1, num_items + 1), "title": [f"Item {i}" for i in range(1, num_items + 1)]})
    items.to_csv(str(path).replace(".csv", "_items.csv"), index=False)
    return str(path)


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny tensors (`pytestmark = pytest.mark.usefixtures("one_thread")`): a second
    OpenMP thread only adds synchronisation, which costs 10-50x when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def chain_csv(tmp_path_factory) -> str:
    return write_chain_dataset(tmp_path_factory.mktemp("data") / "chain.csv")


@pytest.fixture
def chain_source(chain_csv):
    from lightning_rec.data.sources import InteractionFile

    return InteractionFile(chain_csv, item_path=chain_csv.replace(".csv", "_items.csv"), rating_col="rating")
