"""Cold-start items: withholding from training, test_cold/ metrics, baselines, and text rescuing
items that ID embeddings cannot rank."""

from __future__ import annotations

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from tiny_plm import save_tiny_bert
from trainers import quiet_trainer

from lightning_rec.data import ItemCatalog, SequenceDataModule
from lightning_rec.data.sources import InteractionFile
from lightning_rec.data.splits import draw_cold_items
from lightning_rec.encoders import IDItemEncoder, TransformerEncoder
from lightning_rec.encoders.text_item import HybridItemEncoder, TextItemEncoder
from lightning_rec.metrics import ranking_metrics
from lightning_rec.stages import SequentialRecommender
from lightning_rec.stages.baselines import PopularityRecommender, RandomRecommender
from lightning_rec.stages.text_encoding import ItemTextEncoder

GENRES = ["alpha", "bravo", "charlie", "delta"]


@pytest.fixture(scope="module")
def genre_source(tmp_path_factory) -> InteractionFile:
    """40 items in 4 genres named in their titles; each user watches random items of one genre.
    Behaviour follows the text, so text can place an item it never saw in training."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("genres")
    rows = []
    for user in range(120):
        genre = user % 4
        for t, item in enumerate(rng.choice(10, size=rng.integers(6, 10), replace=False)):
            rows.append((f"u{user}", genre * 10 + int(item) + 1, t))
    pd.DataFrame(rows, columns=["user", "item", "timestamp"]).to_csv(folder / "events.csv", index=False)
    titles = [f"{GENRES[(i - 1) // 10]} {i}" for i in range(1, 41)]
    pd.DataFrame({"item": range(1, 41), "title": titles}).to_csv(folder / "items.csv", index=False)
    return InteractionFile(str(folder / "events.csv"), item_path=str(folder / "items.csv"))


def datamodule(source, fraction: float = 0.25) -> SequenceDataModule:
    return SequenceDataModule(
        source, max_len=8, batch_size=32, cache_dir=None, cold_item_fraction=fraction, cold_item_seed=1
    )


def trainer(epochs: int = 0) -> L.Trainer:
    return quiet_trainer(max_epochs=epochs, limit_val_batches=0)


def test_cold_items_are_a_seeded_share_and_never_padding():
    cold = draw_cold_items(200, 0.1, seed=3)
    assert cold.shape == (201,) and int(cold.sum()) == 20 and not cold[0]
    assert torch.equal(cold, draw_cold_items(200, 0.1, seed=3)) and not torch.equal(
        cold, draw_cold_items(200, 0.1, seed=4)
    )
    with pytest.raises(ValueError, match="cold_item_fraction"):
        draw_cold_items(10, 1.0)


def test_cold_items_leave_training_entirely_and_evaluation_untouched(genre_source):
    warm, cold_dm = datamodule(genre_source, 0.0), datamodule(genre_source, 0.25)
    cold_dm.setup()
    cold = cold_dm.cold_items
    assert int(cold.sum()) == 10
    dataset = cold_dm.train_dataloader().dataset
    assert not cold[dataset.windows["items"]].any()  # neither as input nor as target
    # the simulator and the RL stages read the same windows: each target keeps its position in the
    # user's full sequence (where episodes start), so the cold events skipped are not counted
    batch = dataset.__getitems__(list(range(len(dataset))))
    real = batch["target"] != 0
    user = batch["user"].unsqueeze(1).expand_as(real)[real]
    assert torch.equal(batch["target"][real], cold_dm.data.items[cold_dm.data.offsets[user] + batch["position"][real]])
    counts, warm_counts = cold_dm.train_item_counts(), warm.train_item_counts()
    assert torch.all(counts[cold] == 0) and torch.equal(counts[~cold], warm_counts[~cold])
    assert (warm_counts[cold] > 0).any()
    for a, b in [
        (warm.test_dataloader(), cold_dm.test_dataloader()),
        (warm.val_dataloader(), cold_dm.val_dataloader()),
    ]:
        assert torch.equal(a.dataset.users, b.dataset.users) and torch.equal(a.dataset.positions, b.dataset.positions)


def test_test_cold_metrics_cover_exactly_the_rows_with_cold_targets(genre_source):
    dm = datamodule(genre_source)
    torch.manual_seed(0)
    model = SequentialRecommender(IDItemEncoder(16), TransformerEncoder(16, 1, 2, max_len=8, dropout=0.0))
    (result,) = trainer().test(model, dm, verbose=False)
    expected = ranking_metrics([10], dm.num_items)
    model.eval()
    with torch.no_grad():
        for batch in dm.test_dataloader():
            cold = dm.cold_items[batch["target"]]
            expected.update(model.score(batch["input"], batch["history"])[cold], batch["target"][cold])
    values = expected.compute()
    assert result["test_cold/ndcg@10"] == pytest.approx(values["ndcg@10"].item())
    assert result["test_cold/recall@10"] == pytest.approx(values["recall@10"].item())
    assert result["test_cold/recall@10"] != pytest.approx(result["test/recall@10"])


def test_items_without_training_events_are_not_candidates_of_the_training_softmax():
    torch.manual_seed(0)
    model = SequentialRecommender(IDItemEncoder(8), TransformerEncoder(8, 1, 2, max_len=4, dropout=0.0))
    model.build(ItemCatalog(5, None, torch.tensor([0.0, 3, 0, 2, 1, 0])))  # items 2 and 5: no training event
    model.log = lambda *args, **kwargs: None
    batch = {"input": torch.tensor([[0, 1, 3, 4]]), "target": torch.tensor([[1, 3, 4, 1]])}
    loss = model.training_step(batch, 0)
    hidden = model.encode(batch["input"])[0, 1:]
    logits = hidden @ model.item_encoder()[[1, 3, 4]].T
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, torch.tensor([1, 2, 0])))
    loss.backward()
    grad = model.item_encoder.embedding.weight.grad
    assert grad[[2, 5]].abs().sum() == 0 and (grad[[1, 3, 4]].abs().sum(1) > 0).all()
    scores = model.eval().score(batch["input"])
    assert torch.isfinite(scores[0, [2, 5]]).all()  # evaluation still ranks them


def test_popularity_cannot_rank_cold_items_and_random_is_chance(genre_source):
    dm = datamodule(genre_source)
    (popularity,) = trainer().test(PopularityRecommender(eval_ks=[10]), dm, verbose=False)
    assert popularity["test_cold/recall@10"] == 0 and popularity["test/recall@10"] > 0
    L.seed_everything(0)
    (random,) = trainer().test(RandomRecommender(eval_ks=[10], mask_history=False), dm, verbose=False)
    assert 0.1 < random["test/recall@10"] < 0.45  # 10 of 40 items


def test_text_and_hybrid_rank_cold_items_that_ids_cannot(genre_source, tmp_path_factory):
    dm = datamodule(genre_source)
    bert = save_tiny_bert(tmp_path_factory.mktemp("bert"))
    cache = str(tmp_path_factory.mktemp("emb") / "emb.safetensors")
    trainer().predict(ItemTextEncoder(cache, bert, template="{title}"), datamodule=dm)
    results = {}
    for name, items in {
        "id": IDItemEncoder(32),
        "text": TextItemEncoder(cache, 32, num_experts=2, dropout=0.0, init_std=0.2),
        "hybrid": HybridItemEncoder(cache, 32, num_experts=2, dropout=0.0, init_std=0.2),
    }.items():
        L.seed_everything(0)
        model = SequentialRecommender(
            items, TransformerEncoder(32, 1, 2, max_len=8, dropout=0.1), lr=5e-3, warmup_steps=5
        )
        fit = trainer(epochs=8)
        fit.fit(model, dm)
        (results[name],) = fit.test(model, dm, verbose=False)
    cold = {name: r["test_cold/ndcg@10"] for name, r in results.items()}
    assert cold["text"] > 0.3 and cold["hybrid"] > 0.2  # same-genre candidates: ~8 of 40 items
    # Seeds 0-2 (one shuffle each): id 0.19-0.40, hybrid 0.37-0.54, text 0.64-0.71; the few cold
    # items make the ID model's chance ranking noisy, so the claim is the order, not a ratio.
    assert cold["id"] < min(cold["text"], cold["hybrid"])


def test_items_without_events_join_the_catalogue_after_the_others_in_file_order(tmp_path):
    pd.DataFrame({"user": ["a", "a", "a", "b"], "item": [7, 3, 7, 7], "timestamp": [1, 2, 3, 1]}).to_csv(
        tmp_path / "events.csv", index=False
    )
    pd.DataFrame({"item": [9, 3, 5, 7], "title": ["I", "C", "E", "G"]}).to_csv(tmp_path / "items.csv", index=False)
    source = InteractionFile(str(tmp_path / "events.csv"), item_path=str(tmp_path / "items.csv"))
    for flag, titles in [(False, ["C", "G"]), (True, ["C", "G", "I", "E"])]:
        dm = SequenceDataModule(source, max_len=4, cache_dir=None, items_without_events=flag)
        assert dm.catalog.info["title"].tolist() == titles
    assert dm.catalog.popularity.tolist() == [0, 0, 2, 0, 0]  # the new items have no training event


def test_a_checkpoint_grows_to_items_appended_after_it_and_refuses_a_reordered_catalogue():
    def model(ids):
        recommender = SequentialRecommender(IDItemEncoder(4), TransformerEncoder(4, 1, 1, max_len=4))
        info = pd.DataFrame({"item": ids, "title": [str(i) for i in ids]})
        recommender.build(ItemCatalog(len(ids), info, torch.ones(len(ids) + 1)))
        return recommender

    trained = model([1, 2, 3])
    checkpoint = {"state_dict": trained.state_dict()}
    trained.on_save_checkpoint(checkpoint)
    grown = model([1, 2, 3, 4])
    grown.on_load_checkpoint(checkpoint)
    grown.load_state_dict(checkpoint["state_dict"])
    table = grown.item_encoder()
    torch.testing.assert_close(table[:4], trained.item_encoder())
    assert torch.all(table[4] == 0) and grown.popularity[4] == 0
    checkpoint = {"state_dict": trained.state_dict()}
    trained.on_save_checkpoint(checkpoint)
    with pytest.raises(ValueError, match="not the first 3 items of this data"):
        model([2, 1, 3, 4]).on_load_checkpoint(checkpoint)


def test_an_item_added_after_training_is_recommended_to_the_users_its_text_matches(genre_source, tmp_path):
    """Training knows items 1-40. At predict time the item file has one more row, "alpha 41", with no
    event: encoded through the cache (the encode stage sees the texts changed) and ranked by its text,
    it is recommended to the users who watch alpha items, without retraining."""
    bert, cache = save_tiny_bert(tmp_path / "bert"), str(tmp_path / "emb.safetensors")

    def data(source):
        return SequenceDataModule(source, max_len=8, batch_size=32, cache_dir=None, items_without_events=True)

    def recommender():
        return SequentialRecommender(
            HybridItemEncoder(cache, 32, num_experts=2, dropout=0.0, init_std=0.2),
            TransformerEncoder(32, 1, 2, max_len=8, dropout=0.1),
            lr=5e-3,
            warmup_steps=5,
            top_k=5,
        )

    trained = data(genre_source)
    trainer().predict(ItemTextEncoder(cache, bert, template="{title}"), datamodule=trained)
    L.seed_everything(0)
    fit = trainer(epochs=8)
    fit.fit(recommender(), trained)
    fit.save_checkpoint(tmp_path / "model.ckpt")

    items = pd.concat([pd.read_csv(genre_source.item_path), pd.DataFrame({"item": [41], "title": ["alpha 41"]})])
    items.to_csv(tmp_path / "items.csv", index=False)
    grown = data(InteractionFile(str(genre_source.path), item_path=str(tmp_path / "items.csv")))
    trainer().predict(ItemTextEncoder(cache, bert, template="{title}"), datamodule=grown)
    predictions = trainer().predict(recommender(), grown, ckpt_path=tmp_path / "model.ckpt", weights_only=False)
    users = torch.cat([p["user"] for p in predictions])
    recommended = (torch.cat([p["items"] for p in predictions]) == grown.num_items).any(1)
    alpha = torch.tensor([int(grown.data.user_ids[u][1:]) % 4 == 0 for u in users])
    assert grown.num_items == 41 and grown.data.item_info["title"].iloc[-1] == "alpha 41"
    assert recommended[alpha].float().mean() > 0.8 and recommended[~alpha].float().mean() < 0.2
