"""Text, hybrid and end-to-end PLM item encoders: the adaptor's algebra, cache checks against the
catalogue, cold items in the hybrid, partial fine-tuning, and learning through a real Trainer."""

from __future__ import annotations

import lightning as L
import pandas as pd
import pytest
import torch
from tiny_plm import save_tiny_bert
from trainers import quiet_trainer

from lightning_rec.data import ItemCatalog, SequenceDataModule
from lightning_rec.data.item_text import render_item_texts, texts_fingerprint
from lightning_rec.encoders import TransformerEncoder
from lightning_rec.encoders.embedding_cache import EmbeddingCacheError, write_embeddings
from lightning_rec.encoders.text_item import HybridItemEncoder, PLMItemEncoder, TextItemEncoder, WhiteningMoEAdaptor
from lightning_rec.stages import SequentialRecommender
from lightning_rec.stages.text_encoding import ItemTextEncoder

INFO = pd.DataFrame({"item": [1, 2, 3, 4], "title": ["Alien", "Heat", "Up", "Jaws"]})


def catalog(popularity=(0, 5, 0, 2, 1), info=INFO) -> ItemCatalog:
    return ItemCatalog(len(popularity) - 1, info, torch.tensor(popularity, dtype=torch.float))


def write_cache(path, rows: int = 5, dim: int = 6, info=INFO, template: str = "{title}") -> torch.Tensor:
    torch.manual_seed(0)
    table = torch.cat([torch.zeros(1, dim), torch.randn(rows - 1, dim)])
    metadata = (
        {"template": template, "texts_sha256": texts_fingerprint(render_item_texts(info, template))}
        if info is not None
        else {}
    )
    write_embeddings(path, table, metadata)
    return table


def test_adaptor_centres_with_its_bias_and_mixes_experts_by_a_distribution():
    adaptor = WhiteningMoEAdaptor(6, 4, num_experts=3, dropout=0.0)
    with torch.no_grad():
        adaptor.weight.copy_(torch.randn(1, 6, 4).expand(3, 6, 4))  # identical experts ...
        adaptor.bias.copy_(torch.randn(1, 6).expand(3, 6))
        adaptor.gate.weight.normal_()  # ... under any gate
    x = torch.randn(5, 6)
    torch.testing.assert_close(adaptor(x), (x - adaptor.bias[0]) @ adaptor.weight[0])
    torch.testing.assert_close(adaptor(adaptor.bias[:1].clone()), torch.zeros(1, 4))


def test_text_encoder_table_has_zero_padding_and_depends_only_on_the_text_vectors(tmp_path):
    path = tmp_path / "emb.safetensors"
    table = write_cache(path)
    encoder = TextItemEncoder(str(path), dim=4, dropout=0.0)
    encoder.build(catalog())
    items = encoder()
    assert items.shape == (5, 4) and torch.all(items[0] == 0)
    torch.testing.assert_close(items[1:], encoder.adaptor(table[1:]))


def test_text_encoder_rejects_a_cache_from_other_data(tmp_path):
    path = tmp_path / "emb.safetensors"
    write_cache(path, rows=4)
    with pytest.raises(EmbeddingCacheError, match=f"{path} has 4 rows, but the data has 4 items"):
        TextItemEncoder(str(path)).build(catalog())
    write_cache(path, info=INFO.assign(title=["Alien", "Heat", "Up", "Jaws 2"]))
    with pytest.raises(EmbeddingCacheError, match="other item texts"):
        TextItemEncoder(str(path)).build(catalog())
    with pytest.raises(EmbeddingCacheError, match="does not exist"):
        TextItemEncoder(str(tmp_path / "missing.safetensors")).build(catalog())


def test_hybrid_gives_ids_only_to_items_seen_in_training_and_keeps_that_in_checkpoints(tmp_path):
    path = tmp_path / "emb.safetensors"
    write_cache(path)
    hybrid = HybridItemEncoder(str(path), dim=4, dropout=0.0)
    hybrid.build(catalog(popularity=(0, 5, 0, 2, 1)))
    text = TextItemEncoder(str(path), dim=4, dropout=0.0)
    text.build(catalog())
    text.adaptor.load_state_dict(hybrid.adaptor.state_dict())
    difference = (hybrid() - text()).abs().sum(1)
    assert difference[2] == 0 and (difference[[1, 3, 4]] > 0).all()  # item 2 has no training event

    restored = HybridItemEncoder(str(path), dim=4, dropout=0.0)
    restored.build(ItemCatalog(4, None, torch.zeros(5)))  # as when loading a checkpoint
    restored.load_state_dict(hybrid.state_dict())
    torch.testing.assert_close(restored(), hybrid())


def test_hybrid_id_dropout_gives_items_without_id_the_map_of_their_text_scaled_at_evaluation(tmp_path):
    """Items without ID get text + text_to_id(text); in training a fresh `id_dropout` share of the
    warm items do too; at evaluation the cold rows are multiplied by cold_scale, the warm untouched."""
    path = tmp_path / "emb.safetensors"
    write_cache(path, rows=401, info=None)  # no item texts: the cache is not checked against any
    hybrid = HybridItemEncoder(str(path), dim=4, dropout=0.0, id_dropout=0.25, cold_scale=2.0)
    hybrid.build(ItemCatalog(400, None, torch.tensor([0.0] + [0.0, 1.0] * 200)))  # odd items cold
    torch.nn.init.normal_(hybrid.text_to_id.weight)
    text = hybrid.adaptor(hybrid.text_vectors[1:])
    warm, mapped = text + hybrid.id_embedding.weight[1:], text + hybrid.text_to_id(text)
    cold = ~hybrid.has_id[1:, 0]
    hybrid.eval()
    table = hybrid()[1:]
    torch.testing.assert_close(table[cold], 2.0 * mapped[cold])
    torch.testing.assert_close(table[~cold], warm[~cold])
    hybrid.train()
    table = hybrid()
    assert (table[0] == 0).all()
    table = table[1:]
    torch.testing.assert_close(table[cold], mapped[cold])
    swapped = torch.isclose(table[~cold], mapped[~cold]).all(1)
    assert torch.isclose(table[~cold][~swapped], warm[~cold][~swapped]).all()
    assert 0.15 < swapped.float().mean() < 0.35
    assert not torch.equal(swapped, torch.isclose(hybrid()[1:][~cold], mapped[~cold]).all(1))  # drawn afresh


def test_hybrid_without_id_dropout_has_no_map_and_bad_options_are_named(tmp_path):
    path = tmp_path / "emb.safetensors"
    write_cache(path)
    hybrid = HybridItemEncoder(str(path), dim=4)
    hybrid.build(catalog())
    assert hybrid.text_to_id is None and not any("text_to_id" in key for key in hybrid.state_dict())
    with pytest.raises(ValueError, match="id_dropout must be in"):
        HybridItemEncoder(str(path), id_dropout=1.0)
    with pytest.raises(ValueError, match="cold_scale must be positive"):
        HybridItemEncoder(str(path), cold_scale=0.0)


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> str:
    return save_tiny_bert(tmp_path_factory.mktemp("bert"))


def test_plm_item_encoder_trains_only_its_top_layer_and_caches_the_eval_table(bert):
    encoder = PLMItemEncoder(dim=4, model_name=bert, template="{title}", fine_tune_layers=1, max_length=12, dropout=0.0)
    encoder.build(catalog())
    encoder().pow(2).sum().backward()
    named = dict(encoder.language_model.model.named_parameters())
    assert all(p.grad is not None for n, p in named.items() if n.startswith("encoder.layer.1."))
    assert all(p.grad is None for n, p in named.items() if not n.startswith("encoder.layer.1."))
    assert encoder.adaptor.weight.grad is not None

    encoder.eval()
    first = encoder()
    assert encoder() is first  # computed once per evaluation
    encoder.train()
    assert encoder() is not first

    restored = PLMItemEncoder(
        dim=4, model_name=bert, template="{title}", fine_tune_layers=1, max_length=12, dropout=0.0
    )
    restored.build(ItemCatalog(4, None, torch.zeros(5)))
    restored.load_state_dict(encoder.state_dict())
    torch.testing.assert_close(restored.eval()(), encoder.eval()())


def test_text_sasrec_learns_the_item_chain_from_cached_text_vectors(chain_source, bert, tmp_path):
    """Item k's text is "Item k": the adaptor must turn random-BERT vectors of those texts into an item
    space where the chain is predictable (chance NDCG@10 is about 0.1)."""
    dm = SequenceDataModule(chain_source, max_len=8, batch_size=32, cache_dir=None)
    output = tmp_path / "emb.safetensors"
    trainer = quiet_trainer()
    trainer.predict(ItemTextEncoder(str(output), bert, template="{title}"), datamodule=dm)
    L.seed_everything(0)
    model = SequentialRecommender(
        TextItemEncoder(str(output), dim=32, num_experts=4, dropout=0.0, init_std=0.2),
        TransformerEncoder(32, 1, 2, max_len=8, dropout=0.1),
        lr=5e-3,
        warmup_steps=5,
    )
    trainer = quiet_trainer(max_epochs=8, limit_val_batches=0)
    trainer.fit(model, dm)
    (result,) = trainer.test(model, dm, verbose=False)
    assert result["test/ndcg@10"] > 0.5


def test_hybrid_recommender_checkpoint_reloads_and_scores_identically(chain_source, tmp_path):
    dm = SequenceDataModule(chain_source, max_len=8, batch_size=32, cache_dir=None)
    dm.setup()
    cache = tmp_path / "emb.safetensors"
    info = dm.catalog.info
    write_cache(cache, rows=dm.num_items + 1, info=info)
    model = SequentialRecommender(
        HybridItemEncoder(str(cache), dim=16, dropout=0.0), TransformerEncoder(16, 1, 2, max_len=8, dropout=0.0)
    )
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(model, dm)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    restored = SequentialRecommender.load_from_checkpoint(tmp_path / "model.ckpt", weights_only=False)
    batch = next(iter(dm.test_dataloader()))
    torch.testing.assert_close(
        restored.eval().score(batch["input"], batch["history"]), model.eval().score(batch["input"], batch["history"])
    )
    assert torch.equal(restored.item_encoder.has_id, model.item_encoder.has_id) and not model.item_encoder.has_id.all()
