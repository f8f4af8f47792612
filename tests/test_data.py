"""Preprocessing, splits, windows, cache and the SequenceDataModule's batches."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from lightning_rec.data import SequenceDataModule
from lightning_rec.data.datasets import training_windows
from lightning_rec.data.errors import DataError
from lightning_rec.data.preprocess import PreprocessOptions, build_sequences, load_or_build
from lightning_rec.data.sources import RawData
from lightning_rec.data.splits import leave_one_out, temporal_split, training_sequences


def raw(rows, name="t") -> RawData:
    return RawData(pd.DataFrame(rows, columns=["user", "item", "timestamp", "rating"]), None, name)


def test_sequences_are_chronological_with_stable_ties_and_remapped_ids():
    data = build_sequences(
        raw([("b", "x", 5, 1.0), ("a", "z", 2, 1.0), ("a", "y", 1, 1.0), ("a", "x", 2, 1.0)]), PreprocessOptions()
    )
    assert data.item_ids == ["x", "y", "z"]  # items 1..N, 0 is padding
    a = data.user_ids.index("a")
    # time order; the two events at t=2 keep their file order (z before x)
    assert data.user_history(a).tolist() == [2, 3, 1]
    assert data.user_history(data.user_ids.index("b")).tolist() == [1]


def test_rating_threshold_dedup_and_k_core():
    rows = [("a", 1, 1, 5.0), ("a", 2, 2, 1.0), ("a", 1, 3, 5.0), ("a", 3, 4, 4.0), ("a", 4, 5, 5.0)]
    rows += [("b", 3, 1, 4.0), ("b", 4, 2, 5.0), ("c", 4, 1, 5.0), ("c", 5, 2, 5.0)]
    data = build_sequences(
        raw(rows), PreprocessOptions(min_rating=4.0, deduplicate=True, min_user_interactions=2, min_item_interactions=2)
    )
    # rating >= 4 drops (a,2); dedup drops a's second 1; 2-core drops items 1 and 5, then user c (one event left)
    histories = {u: [data.item_ids[i - 1] for i in data.user_history(k).tolist()] for k, u in enumerate(data.user_ids)}
    assert histories == {"a": [3, 4], "b": [3, 4]}


def test_rating_threshold_without_ratings_is_an_error():
    frame = pd.DataFrame({"user": [1], "item": [1], "timestamp": [1]})
    with pytest.raises(DataError, match="min_rating"):
        build_sequences(RawData(frame, None, "t"), PreprocessOptions(min_rating=3))


def test_windows_make_every_training_event_but_the_first_a_target_once(chain_source):
    data = build_sequences(chain_source.load(), PreprocessOptions())
    split = leave_one_out(data)
    for max_len in (3, 7, 50):
        no_cold = torch.zeros(data.num_items + 1, dtype=torch.bool)
        windows = training_windows(training_sequences(data, split.train_end, no_cold), max_len)["items"]
        targets = windows[:, 1:][(windows[:, :-1] != 0) & (windows[:, 1:] != 0)]
        expected = torch.cat([data.user_history(u)[1 : split.train_end[u]] for u in range(data.num_users)])
        assert sorted(targets.tolist()) == sorted(expected.tolist())
        assert len(targets) == int((split.train_end - 1).clamp(min=0).sum())


def test_leave_one_out_holds_out_last_two_events():
    data = build_sequences(
        raw([("a", i, i, 1.0) for i in range(1, 6)] + [("b", 1, 1, 1.0), ("b", 2, 2, 1.0)]), PreprocessOptions()
    )
    split = leave_one_out(data)
    a, b = data.user_ids.index("a"), data.user_ids.index("b")
    assert split.train_end[a] == 3 and split.train_end[b] == 2  # b is too short to evaluate: all training
    assert (
        split.test_users.tolist() == [a]
        and split.test_positions.tolist() == [4]
        and split.val_positions.tolist() == [3]
    )


def test_temporal_split_trains_on_the_past_only():
    rows = [("a", i, i, 1.0) for i in range(1, 11)] + [("b", i, i + 0.5, 1.0) for i in range(1, 11)]
    data = build_sequences(raw(rows), PreprocessOptions())
    split = temporal_split(data, 0.2, 0.2)
    t_val = torch.quantile(data.timestamps, 0.6)
    for u in range(data.num_users):
        ts = data.timestamps[data.offsets[u] : data.offsets[u + 1]]
        assert (ts[: split.train_end[u]] < t_val).all() and (ts[split.train_end[u] :] >= t_val).all()
    for users, positions in ((split.val_users, split.val_positions), (split.test_users, split.test_positions)):
        assert len(users) == 2 and (positions >= 1).all()
    assert (split.test_positions > split.val_positions).all()


def test_cache_is_reused_and_a_corrupt_cache_is_rebuilt(chain_source, tmp_path, monkeypatch):
    options = PreprocessOptions()
    first = load_or_build(chain_source, options, str(tmp_path))
    (cache,) = tmp_path.glob("sequences-*.pt")
    calls = []
    monkeypatch.setattr(type(chain_source), "load", lambda self: calls.append(1) or pytest.fail("should not reload"))
    again = load_or_build(chain_source, options, str(tmp_path))
    assert torch.equal(first.items, again.items) and not calls
    monkeypatch.undo()
    cache.write_bytes(b"not a torch file")
    rebuilt = load_or_build(chain_source, options, str(tmp_path))
    assert torch.equal(first.items, rebuilt.items)
    assert len(list(tmp_path.glob("*.tmp"))) == 0
    # other options -> another cache file, the first one untouched
    load_or_build(chain_source, PreprocessOptions(deduplicate=True), str(tmp_path))
    assert len(list(tmp_path.glob("sequences-*.pt"))) == 2


def test_eval_batches_hold_input_history_and_target(chain_source, tmp_path):
    dm = SequenceDataModule(chain_source, max_len=4, cache_dir=str(tmp_path), eval_batch_size=1000)
    dm.setup()
    batch = next(iter(dm.test_dataloader()))
    for row in range(len(batch["user"])):
        seq = dm.data.user_history(int(batch["user"][row]))
        assert batch["target"][row] == seq[-1]
        assert batch["input"][row][batch["input"][row] != 0].tolist() == seq[:-1][-4:].tolist()
        assert sorted(batch["history"][row][batch["history"][row] != 0].tolist()) == sorted(seq[:-1].tolist())
    val = next(iter(dm.val_dataloader()))
    assert all(val["target"][r] == dm.data.user_history(int(val["user"][r]))[-2] for r in range(len(val["user"])))


def test_popularity_counts_training_events_only(chain_source, tmp_path):
    dm = SequenceDataModule(chain_source, cache_dir=str(tmp_path))
    counts = dm.train_item_counts()
    assert counts[0] == 0 and counts.sum() == dm.split.train_end.sum()


def test_no_evaluable_user_is_a_clear_error(tmp_path):
    from lightning_rec.data.sources import InteractionFile

    path = tmp_path / "short.csv"
    pd.DataFrame({"user": [1, 1, 2], "item": [1, 2, 3], "timestamp": [1, 2, 3]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="at least 3"):
        SequenceDataModule(InteractionFile(str(path)), cache_dir=None).setup()


def test_unknown_predict_users_are_named(chain_source):
    dm = SequenceDataModule(chain_source, cache_dir=None, predict_users=["u1", "nobody"])
    with pytest.raises(DataError, match="nobody"):
        dm.predict_user_indices()


# --- item categories ---------------------------------------------------------------------------

CATEGORY_CONFIG = """
data:
  class_path: lightning_rec.data.SequenceDataModule
  init_args:
    source:
      class_path: lightning_rec.data.sources.InteractionFile
      init_args: {{path: {events}, item_path: {items}}}
    cache_dir: {cache}
    category: {{column: kinds, pick: {pick}, sep: "|"}}
model:
  class_path: lightning_rec.stages.SequentialRecommender
  init_args:
    item_encoder: {{class_path: lightning_rec.encoders.IDItemEncoder, init_args: {{dim: 8}}}}
    sequence_encoder:
      class_path: lightning_rec.encoders.TransformerEncoder
      init_args: {{dim: 8, num_layers: 1, max_len: 4}}
trainer: {{logger: false, enable_checkpointing: false, default_root_dir: {cache}}}
"""


def write_category_data(tmp_path) -> tuple[str, str]:
    events = tmp_path / "events.csv"
    rows = [(user, item, t) for user in ("a", "b") for t, item in enumerate(["i1", "i2", "i3", "i4"])]
    pd.DataFrame(rows, columns=["user", "item", "timestamp"]).to_csv(events, index=False)
    items = tmp_path / "items.csv"
    items.write_text("item,kinds\ni1,Drama|Comedy\ni2, Comedy \ni4,\ni3,Action|Drama|War\n")
    return str(events), str(items)


@pytest.mark.parametrize(
    ("pick", "ids", "names"),
    [
        # items in index order i1..i4; i4 has no category (id 0)
        ("first", [0, 3, 2, 1, 0], ["Action", "Comedy", "Drama"]),
        ("last", [0, 1, 1, 2, 0], ["Comedy", "War"]),
        ("whole", [0, 3, 2, 1, 0], ["Action|Drama|War", "Comedy", "Drama|Comedy"]),
    ],
)
def test_category_field_from_yaml_gives_one_id_per_item(tmp_path, pick, ids, names):
    from lightning_rec.cli import RecommenderCLI

    events, items = write_category_data(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(CATEGORY_CONFIG.format(events=events, items=items, cache=tmp_path, pick=pick))
    cli = RecommenderCLI(args=["-c", str(config)], run=False)
    catalog = cli.datamodule.catalog
    assert catalog.categories.dtype == torch.long and catalog.categories.tolist() == ids
    assert catalog.category_names == names


def test_category_of_the_bundled_movielens_is_its_first_genre():
    from lightning_rec.data.categories import CategoryField

    dm = SequenceDataModule(cache_dir=None, category=CategoryField("genres", "first"))
    catalog = dm.catalog
    info = dm.data.item_info
    toy_story = int(info.index[info["title"] == "Toy Story"][0]) + 1  # "Adventure, Animation, ..."
    assert catalog.category_names[catalog.categories[toy_story] - 1] == "Adventure"
    assert catalog.categories[0] == 0 and catalog.categories.shape == (dm.num_items + 1,)
    no_genre = torch.as_tensor((info["genres"] == "").to_numpy())
    assert torch.equal(catalog.categories[1:] == 0, no_genre)  # "(no genres listed)": no category
    assert len(catalog.category_names) == 18


def test_category_errors_name_the_column(chain_source):
    from lightning_rec.data.categories import CategoryField

    dm = SequenceDataModule(chain_source, cache_dir=None, category=CategoryField("genre"))
    with pytest.raises(DataError, match=r"category column 'genre': .*columns: 'item', 'title'"):
        _ = dm.catalog
    assert SequenceDataModule(chain_source, cache_dir=None).catalog.categories is None
    with pytest.raises(ValueError, match="pick must be"):
        CategoryField("genres", "middle")
