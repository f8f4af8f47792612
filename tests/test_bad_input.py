"""Bad input, case by case, the way a user meets it: each case gives its exact message (naming the
file, line, field or step where it has them) and leaves every file already on disk as it was."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch
from test_cli import write_config
from trainers import quiet_trainer

from lightning_rec.cli import main
from lightning_rec.data import SequenceDataModule
from lightning_rec.data.errors import DataError
from lightning_rec.data.preprocess import PreprocessOptions, load_or_build
from lightning_rec.data.sources import InteractionFile
from lightning_rec.divergence import NonFiniteTraining, StopOnNonFinite
from lightning_rec.encoders.embedding_cache import EmbeddingCacheError, write_embeddings
from lightning_rec.encoders.text_item import TextItemEncoder
from lightning_rec.rl import ResponseModel, UserBehaviour
from lightning_rec.rl.agents import RandomAgent, RecommenderAgent
from lightning_rec.rl.rollout import rollout
from lightning_rec.rl.simulator_artifact import CHECKPOINT_KEY, load_simulators, simulator_entry
from lightning_rec.stages.fine_tuning import trained_session
from lightning_rec.stages.pretraining import load_recommender

HEADER = "user,item,timestamp\n"


def snapshot(*roots: Path) -> dict[str, str]:
    return {
        str(path): hashlib.sha256(path.read_bytes()).hexdigest()
        for root in roots
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def assert_unchanged(before: dict[str, str], *roots: Path) -> None:
    """Every file that was there is still there, byte for byte (new log folders may appear)."""
    after = snapshot(*roots)
    assert {path: after.get(path) for path in before} == before


class World:
    """A trained run on the chain data: its YAML, output folder and best checkpoint."""

    def __init__(self, root: Path, chain_csv: str):
        self.root, self.data = root, str(shutil.copy(chain_csv, root / "chain.csv"))
        shutil.copy(chain_csv.replace(".csv", "_items.csv"), root / "chain_items.csv")
        self.config = write_config(root / "config.yaml", self.data, root / "out", epochs=2)
        main(["fit", "-c", self.config])
        self.checkpoint = str(next((root / "out").glob("csv/version_*/checkpoints/best.ckpt")))

    def fails(self, argv: list[str], tmp_path: Path, status: int = 1) -> str:
        """stderr of `lightning-rec argv`, which must exit with `status` and leave every file as it was."""
        before = snapshot(self.root, tmp_path)
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == status
        assert_unchanged(before, self.root, tmp_path)
        return self.capsys.readouterr().err


@pytest.fixture(scope="module")
def trained_world(tmp_path_factory, chain_csv) -> World:
    return World(tmp_path_factory.mktemp("world"), chain_csv)


@pytest.fixture
def world(trained_world, capsys) -> World:
    trained_world.capsys = capsys
    capsys.readouterr()
    return trained_world


def fit_on(world: World, path: Path, *extra: str) -> list[str]:
    return ["fit", "-c", world.config, "--data.init_args.source.init_args.path", str(path), *extra]


# -- the data files --------------------------------------------------------------------------------
CSV_CASES = {
    "not_a_number": (HEADER + "u1,2,5\nu1,2,abc\n", "line 3, field 'timestamp': 'abc' is not a number"),
    "missing_value": (HEADER + "u1,2,5\nu1,,6\n", "line 3, field 'item': value is missing"),
    "extra_field": (HEADER + "u1,2,5\nu1,2,6,7\n", "cannot parse as ','-separated text"),
    "missing_column": ("user,item\nu1,2\n", "missing column 'timestamp' (columns found: 'user', 'item')"),
    "empty_file": ("", "file is empty"),
    "header_only": (HEADER, "no data rows"),
    "bad_encoding": (HEADER.encode() + b"u\xff1,2,5\n", "not valid utf-8 text"),
}


@pytest.mark.parametrize("case", CSV_CASES)
def test_a_broken_interaction_file_is_one_line_naming_file_line_and_field(world, tmp_path, case):
    text, message = CSV_CASES[case]
    path = tmp_path / "bad.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    err = world.fails(fit_on(world, path), tmp_path)
    assert err.startswith(f"lightning-rec: error: {path}: {message}")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_missing_interaction_file_is_named(world, tmp_path):
    err = world.fails(fit_on(world, tmp_path / "nope.csv"), tmp_path)
    assert err == f"lightning-rec: error: {tmp_path / 'nope.csv'}: file not found\n"


def test_duplicate_ids_in_the_item_file_name_both_lines(world, tmp_path):
    items = tmp_path / "items.csv"
    items.write_text("item,title\n2,x\n3,y\n2,z\n")
    argv = ["fit", "-c", world.config, "--data.init_args.source.init_args.item_path", str(items)]
    err = world.fails(argv, tmp_path)
    assert err == f"lightning-rec: error: {items}: field 'item': item '2' appears more than once (lines 2, 4)\n"


def test_a_parquet_row_with_a_missing_value_is_named(world, tmp_path):
    path = tmp_path / "e.parquet"
    pd.DataFrame({"user": ["a", None], "item": [3, 4], "timestamp": [1, 2]}).to_parquet(path)
    err = world.fails(fit_on(world, path), tmp_path)
    assert err == f"lightning-rec: error: {path}: row 2, field 'user': value is missing\n"


def test_a_file_that_is_not_parquet_is_named(world, tmp_path):
    path = tmp_path / "e.parquet"
    path.write_text("user,item,timestamp\n")
    err = world.fails(fit_on(world, path), tmp_path)
    assert err.startswith(f"lightning-rec: error: {path}: cannot read as Parquet")


def test_users_with_one_event_each_leave_nobody_to_evaluate(world, tmp_path):
    path = tmp_path / "one.csv"
    path.write_text(HEADER + "".join(f"u{u},{u % 5 + 1},{u}\n" for u in range(20)))
    err = world.fails(fit_on(world, path), tmp_path)
    assert err == (
        "lightning-rec: error: no user can be evaluated: leave-one-out needs users with at least 3 interactions\n"
    )


def test_a_rating_threshold_on_data_without_ratings_is_named(world, tmp_path):
    err = world.fails(["fit", "-c", world.config, "--data.init_args.min_rating", "4"], tmp_path)
    assert err.startswith("lightning-rec: error: min_rating=4.0 needs ratings, but dataset")


def test_users_unknown_at_predict_time_are_named(world, tmp_path):
    argv = ["predict", "-c", world.config, "--ckpt_path", world.checkpoint]
    err = world.fails(argv + ["--data.init_args.predict_users", "[u1, nobody]"], tmp_path)
    assert err == "lightning-rec: error: predict_users: unknown user ids ['nobody']\n"


def test_items_the_item_file_lacks_are_titled_by_their_id_in_predictions(world, tmp_path):
    """Documented fallback (datasets.md): an item with no metadata row gets its id as title."""
    items = tmp_path / "items.csv"
    items.write_text("item,title\n" + "".join(f"{i},Item {i}\n" for i in range(1, 40)))  # not item 40
    written = world.root / "out" / "recommendations.csv"
    before = {k: v for k, v in snapshot(world.root).items() if k != str(written)}
    argv = ["predict", "-c", world.config, "--ckpt_path", world.checkpoint]
    main(argv + ["--data.init_args.source.init_args.item_path", str(items)])
    assert_unchanged(before, world.root)
    recs = pd.read_csv(written)
    assert (recs["item"] == 40).any() and (recs.loc[recs["item"] == 40, "title"] == "40").all()


def test_a_user_unknown_to_recommend_gets_the_most_popular_items(world, tmp_path):
    """Documented fallback (architecture.md): no history, so the most popular items."""
    before = snapshot(world.root)
    main(["recommend", "-c", world.config, "--ckpt_path", world.checkpoint, "--user", "stranger", "--k", "3"])
    printed = world.capsys.readouterr().out.splitlines()
    assert printed[0] == "user 'stranger' is not in the data: showing the 3 most popular items instead"
    assert printed[1] == "top 3 recommendations:" and len(printed) == 5
    assert_unchanged(before, world.root)


# -- the YAML ------------------------------------------------------------------------------------
def test_a_wrong_yaml_key_is_named(world, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(Path(world.config).read_text().replace("batch_size: 32", "batch_sise: 32"))
    err = world.fails(["fit", "-c", str(config)], tmp_path, status=2)
    assert "Option 'batch_sise' is not accepted" in err


def test_a_wrong_yaml_type_names_the_key_and_value(world, tmp_path):
    err = world.fails(["fit", "-c", world.config, "--data.init_args.max_len", "eight"], tmp_path, status=2)
    assert 'Parser key "max_len":' in err and "Expected a <class 'int'>. Got value: eight" in err


def test_a_yaml_syntax_error_names_the_line(world, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(Path(world.config).read_text().replace("max_len: 8", "max_len: [8"))
    err = world.fails(["fit", "-c", str(config)], tmp_path, status=2)
    assert "Problems parsing config" in err and "line 10" in err


def test_a_value_the_constructor_refuses_is_its_message(world, tmp_path):
    err = world.fails(["fit", "-c", world.config, "--data.init_args.max_len", "0"], tmp_path)
    assert err == "lightning-rec: error: invalid configuration: max_len must be at least 1, got 0\n"


# -- checkpoints ---------------------------------------------------------------------------------
def test_a_missing_checkpoint_is_named(world, tmp_path):
    missing = tmp_path / "none.ckpt"
    err = world.fails(["test", "-c", world.config, "--ckpt_path", str(missing)], tmp_path)
    assert err == f"lightning-rec: error: {missing}: checkpoint not found\n"


def test_a_missing_policy_checkpoint_of_the_rl_table_is_named(tmp_path):
    """`policies` of the RL evaluation are read for the session they were trained under: a wrong path
    is a DataError naming it (it was a FileNotFoundError traceback from inside torch.load)."""
    missing = tmp_path / "ppo" / "last.ckpt"
    with pytest.raises(DataError, match=f"^{re.escape(str(missing))}: checkpoint not found$"):
        trained_session(str(missing))


def test_a_truncated_checkpoint_is_refused(world, tmp_path):
    cut = tmp_path / "cut.ckpt"
    data = Path(world.checkpoint).read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    err = world.fails(["test", "-c", world.config, "--ckpt_path", str(cut)], tmp_path)
    assert err.startswith(f"lightning-rec: error: {cut}: not a readable checkpoint (")
    assert err.endswith("it may be truncated by an interrupted copy\n")


def test_a_file_that_is_no_checkpoint_is_refused(world, tmp_path):
    other = tmp_path / "other.ckpt"
    torch.save({"weights": torch.zeros(2)}, other)
    err = world.fails(["test", "-c", world.config, "--ckpt_path", str(other)], tmp_path)
    assert err == f"lightning-rec: error: {other}: not a Lightning checkpoint (no state_dict)\n"


def shifted_items(tmp_path: Path, world: World, keep: int | None = None, shift: int = 0) -> Path:
    """The chain data with item ids shifted by `shift` (other items, same count) or cut to `keep` items."""
    frame = pd.read_csv(world.data)
    if keep is not None:
        frame = frame[frame["item"] <= keep]
    frame["item"] += shift
    path = tmp_path / "other.csv"
    frame.to_csv(path, index=False)
    items = sorted(frame["item"].unique())
    pd.DataFrame({"item": items, "title": [f"Item {i}" for i in items]}).to_csv(
        tmp_path / "other_items.csv", index=False
    )
    return path


def other_data(path: Path) -> list[str]:
    items = str(path).replace(".csv", "_items.csv")
    return ["--data.init_args.source.init_args.path", str(path), "--data.init_args.source.init_args.item_path", items]


@pytest.mark.parametrize("command", ["test", "predict"])
def test_a_checkpoint_of_another_catalogue_size_is_refused(world, tmp_path, command):
    other = shifted_items(tmp_path, world, keep=30)
    argv = [command, "-c", world.config, "--ckpt_path", world.checkpoint]
    argv += other_data(other)
    err = world.fails(argv, tmp_path)
    assert err == (
        f"lightning-rec: error: {world.checkpoint}: the checkpoint knows 40 items, this data only 30: "
        "use the data configuration it was trained with\n"
    )


def test_a_checkpoint_of_other_items_of_the_same_count_is_refused(world, tmp_path):
    other = shifted_items(tmp_path, world, shift=100)
    argv = ["test", "-c", world.config, "--ckpt_path", world.checkpoint]
    argv += other_data(other)
    err = world.fails(argv, tmp_path)
    assert err == (
        f"lightning-rec: error: {world.checkpoint}: the checkpoint's 40 items are not the first 40 items of this "
        "data, in order; items added after training must come after the others (items_without_events: true)\n"
    )


def test_recommend_refuses_a_checkpoint_of_other_data(world, tmp_path):
    other = shifted_items(tmp_path, world, keep=30)
    argv = ["recommend", "-c", world.config, "--ckpt_path", world.checkpoint, "--user", "u1"]
    argv += other_data(other)
    err = world.fails(argv, tmp_path)
    assert err.startswith(f"lightning-rec: error: {world.checkpoint}: the checkpoint knows 40 items, this data only 30")


# -- caches --------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_preprocessing_cache_is_rebuilt_not_read(chain_source, tmp_path, damage):
    options = PreprocessOptions()
    fresh = load_or_build(chain_source, options, str(tmp_path))
    (cache,) = tmp_path.glob("sequences-*.pt")
    intact = cache.read_bytes()
    cache.write_bytes(b"\x00garbage" * 10 if damage == "garbage" else intact[: len(intact) // 2])
    again = load_or_build(chain_source, options, str(tmp_path))
    assert torch.equal(again.items, fresh.items) and again.item_ids == fresh.item_ids
    rebuilt = torch.load(cache, weights_only=False)  # rebuilt whole: the file reads back as the data
    assert cache.read_bytes() != intact[: len(intact) // 2] and torch.equal(rebuilt["items"], fresh.items)
    assert [p.name for p in tmp_path.iterdir()] == [cache.name]  # no temporary left behind


def embedding_cache(tmp_path: Path, rows: int, texts: str = "x") -> Path:
    path = tmp_path / "emb.safetensors"
    table = torch.cat([torch.zeros(1, 4), torch.randn(rows - 1, 4)])
    write_embeddings(path, table, {"template": "{title}", "texts_sha256": texts})
    return path


def built_text_encoder(world: World, path: Path) -> None:
    source = InteractionFile(world.data, item_path=world.data.replace(".csv", "_items.csv"))
    dm = SequenceDataModule(source, max_len=8, cache_dir=None)
    TextItemEncoder(str(path)).build(dm.catalog)


def test_an_embedding_cache_with_another_item_count_is_refused(world, tmp_path):
    path = embedding_cache(tmp_path, rows=5)
    before = snapshot(tmp_path)
    with pytest.raises(EmbeddingCacheError) as error:
        built_text_encoder(world, path)
    assert str(error.value) == (
        f"embedding cache {path} has 5 rows, but the data has 40 items (+1 padding row = 41); "
        "re-run the encode stage with this data YAML"
    )
    assert_unchanged(before, tmp_path)


def test_an_embedding_cache_of_other_item_texts_is_refused(world, tmp_path):
    path = embedding_cache(tmp_path, rows=41, texts="of other items")
    before = snapshot(tmp_path)
    with pytest.raises(EmbeddingCacheError, match="was made from other item texts than this data's"):
        built_text_encoder(world, path)
    assert_unchanged(before, tmp_path)


@pytest.mark.parametrize(
    ("damage", "message"),
    [("truncated", "is unreadable"), ("flipped", r"does not match its checksum \(file altered or corrupt\)")],
)
def test_a_damaged_embedding_cache_is_refused(world, tmp_path, damage, message):
    path = embedding_cache(tmp_path, rows=41)
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        del data[len(data) // 2 :]
    else:
        data[-3] ^= 0xFF  # a bit of the table itself
    path.write_bytes(bytes(data))
    before = snapshot(tmp_path)
    with pytest.raises(EmbeddingCacheError, match=message):
        built_text_encoder(world, path)
    assert_unchanged(before, tmp_path)


# -- the simulator and RL settings ---------------------------------------------------------------
@pytest.fixture(scope="module")
def simulator_checkpoint(tmp_path_factory, chain_csv):
    """A simulation checkpoint of the chain data, written the way SimulatorTraining writes one."""
    dm = SequenceDataModule(InteractionFile(chain_csv, rating_col="rating"), max_len=8, cache_dir=None)
    dm.setup()
    model = ResponseModel(dim=8)
    model.build(dm.data.num_items, (1.0, 5.0), 3.0)
    users = torch.arange(dm.data.num_users)
    sizes = {"num_users": dm.data.num_users, "num_items": dm.data.num_items, "rating_range": (1.0, 5.0)}
    sizes |= {"mean_rating": 3.0, "history_len": 8}
    state = {f"response_models.{i}.{k}": v for i in range(2) for k, v in model.state_dict().items()}
    path = tmp_path_factory.mktemp("sim") / "simulator.ckpt"
    torch.save({"state_dict": state, CHECKPOINT_KEY: simulator_entry([model, model], [users, users], sizes)}, path)
    return str(path), dm


def test_a_simulator_checkpoint_used_with_other_data_is_refused(simulator_checkpoint, world, tmp_path):
    path, _ = simulator_checkpoint
    other = SequenceDataModule(InteractionFile(str(shifted_items(tmp_path, world, keep=30))), cache_dir=None)
    other.setup()
    with pytest.raises(DataError) as error:
        load_simulators(path, other.data, other.split.train_end, UserBehaviour())
    assert str(error.value) == (
        f"{path}: the simulator was fit on 80 users x 40 items, the data has "
        f"{other.data.num_users} x 30: use the same data configuration"
    )


def test_a_checkpoint_without_a_simulator_is_refused(simulator_checkpoint, world):
    _, dm = simulator_checkpoint
    with pytest.raises(DataError, match=f"{world.checkpoint} holds no trained user simulator"):
        load_simulators(world.checkpoint, dm.data, dm.split.train_end, UserBehaviour())


@pytest.mark.parametrize(
    ("slate_size", "message"),
    [(0, "slate_size must be at least 1, got 0"), (41, "slate_size=41 exceeds the catalogue's 40 items")],
)
def test_an_empty_or_oversized_slate_is_refused(simulator_checkpoint, slate_size, message):
    path, dm = simulator_checkpoint
    simulator = load_simulators(path, dm.data, dm.split.train_end, UserBehaviour(max_steps=3))["train"]
    with pytest.raises(DataError, match=f"^{message}$"):
        rollout(simulator, RandomAgent(dm.data.num_items, 0), torch.arange(4), slate_size=slate_size)


def test_context_and_episode_longer_than_the_encoder_positions_are_refused(world):
    recommender = load_recommender(world.checkpoint)  # a transformer with max_len 8
    with pytest.raises(DataError) as error:
        RecommenderAgent(recommender, context_len=6, max_steps=3)
    assert str(error.value) == (
        "context_len (6) + behaviour.max_steps (3) = 9 exceeds the pretrained encoder's max_len (8): "
        "shorten the context or the episodes"
    )


# -- training that diverges ----------------------------------------------------------------------
class Diverging(L.LightningModule):
    """A linear model whose loss (or, with `gradient`, only whose gradient) turns non-finite at `step`."""

    def __init__(self, bad: float, step: int, gradient: bool = False):
        super().__init__()
        self.layer, self.bad, self.at, self.gradient = torch.nn.Linear(2, 1), bad, step, gradient

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        if self.global_step == self.at:
            if self.gradient:
                self.layer.weight.register_hook(lambda grad: grad * self.bad)
            else:
                loss = loss * self.bad
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(16, 2)), batch_size=2)


@pytest.mark.parametrize(
    ("bad", "gradient", "what"),
    [
        (float("nan"), False, "the loss is nan"),
        (float("inf"), False, "the loss is inf"),
        (float("inf"), True, "the gradients of layer.weight are not finite"),
    ],
)
def test_a_non_finite_loss_or_gradient_stops_at_its_step_before_the_weights_take_it(tmp_path, bad, gradient, what):
    module = Diverging(bad, step=3, gradient=gradient)
    trainer = quiet_trainer(max_epochs=1, callbacks=[StopOnNonFinite()], default_root_dir=tmp_path)
    with pytest.raises(NonFiniteTraining) as error:
        trainer.fit(module)
    assert str(error.value) == (
        f"training stopped at epoch 0, global step 3 (batch 3): {what}; nothing was written for this step "
        "(lower the learning rate, clip gradients, or look for extreme values in the inputs)"
    )
    assert trainer.global_step == 3 and all(torch.isfinite(p).all() for p in module.parameters())


# -- how the command reports them --------------------------------------------------------------------
@pytest.mark.parametrize("ask", ["--debug", "LIGHTNING_REC_DEBUG"])
def test_debug_shows_the_traceback(world, tmp_path, monkeypatch, ask):
    path = tmp_path / "bad.csv"
    path.write_text("")
    argv = fit_on(world, path)
    if ask == "--debug":
        argv.append("--debug")
    else:
        monkeypatch.setenv("LIGHTNING_REC_DEBUG", "1")
    with pytest.raises(DataError, match="file is empty"):
        main(argv)


# -- a writer killed mid-write -----------------------------------------------------------------------
DYING_WRITER = """
import io, os, signal, sys, torch, safetensors.torch
from lightning_rec.data.preprocess import PreprocessOptions, load_or_build
from lightning_rec.data.sources import InteractionFile
from lightning_rec.encoders.embedding_cache import write_embeddings

def die_after_half(data, path):
    with open(path, "wb") as out:
        out.write(data[: len(data) // 2])
    os.kill(os.getpid(), signal.SIGKILL)

def torch_save(obj, path, *args, **kwargs):
    buffer = io.BytesIO()
    real_torch_save(obj, buffer)
    die_after_half(buffer.getvalue(), path)

def save_file(tensors, path, metadata=None):
    die_after_half(safetensors.torch.save(tensors, metadata=metadata), path)

real_torch_save = torch.save
if sys.argv[1] == "sequences":
    torch.save = torch_save
    load_or_build(InteractionFile(sys.argv[2]), PreprocessOptions(), sys.argv[3])
else:
    safetensors.torch.save_file = save_file
    write_embeddings(sys.argv[3], torch.ones(41, 4).index_fill_(0, torch.tensor([0]), 0), {"texts_sha256": "new"})
"""


def killed_writer(*args: str) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", DYING_WRITER, *args], capture_output=True, timeout=120)
    assert done.returncode == -9, done.stderr.decode()


def test_a_preprocessing_run_killed_mid_write_leaves_no_cache_and_the_next_run_rebuilds(chain_csv, tmp_path):
    killed_writer("sequences", chain_csv, str(tmp_path))
    assert not list(tmp_path.glob("sequences-*.pt"))  # only the hidden, half-written temporary
    assert [p.stat().st_size > 0 for p in tmp_path.glob(".sequences-*.tmp")] == [True]
    rebuilt = load_or_build(InteractionFile(chain_csv), PreprocessOptions(), str(tmp_path))
    (cache,) = tmp_path.glob("sequences-*.pt")
    assert torch.equal(torch.load(cache, weights_only=False)["items"], rebuilt.items)


def test_an_embedding_cache_rewrite_killed_mid_write_leaves_the_old_cache_intact(tmp_path):
    from lightning_rec.encoders.embedding_cache import read_embeddings

    path = embedding_cache(tmp_path, rows=41, texts="old")
    old = read_embeddings(path)
    killed_writer("embeddings", "-", str(path))
    table, metadata = read_embeddings(path)  # the old file, whole: never the half-written new one
    assert torch.equal(table, old[0]) and metadata == old[1] == {"template": "{title}", "texts_sha256": "old"}
