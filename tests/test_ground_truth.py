"""Ground-truth environments: a reward matrix built from a small hand-written table, episodes played
under the quit rule, the modes and patience with hand-computed rewards, the rollout's masking of
items the matrix does not have, matrix-factorisation completion, and a GroundTruth read from YAML
over KuaiRec-format files."""

from __future__ import annotations

from pathlib import Path

import jsonargparse
import pandas as pd
import pytest
import torch

from lightning_rec.data.errors import DataError
from lightning_rec.data.preprocess import SequenceData
from lightning_rec.rl import UserBehaviour, UserSimulator
from lightning_rec.rl.agents import PopularityAgent
from lightning_rec.rl.behaviour import QuitRule
from lightning_rec.rl.matrix_factorisation import fit_matrix_factorisation
from lightning_rec.rl.reward_matrix import MatrixResponse, reward_matrix
from lightning_rec.rl.rollout import rollout

pytestmark = pytest.mark.usefixtures("one_thread")

# data: users 1, 2, 3 (indices 0-2); items 10..60 (indices 1-6); every user has logged item 60
ITEM_IDS = [10, 20, 30, 40, 50, 60]
CATEGORIES = torch.tensor([0, 1, 1, 2, 2, 3, 3])
NAN, INF = float("nan"), float("inf")
EVENTS = pd.DataFrame(
    [
        (1, 10, 1.0),
        (1, 20, 3.0),
        (1, 30, 0.5),
        (1, 40, 2.0),
        (1, 50, 7.0),  # clipped to 5
        (2, 10, NAN),  # the mean of the finite values
        (2, 20, INF),  # clipped to 5 first
        (2, 30, 1.0),
        (2, 30, 2.0),  # a pair given twice: the mean, 1.5
        (2, 50, 0.0),  # (2, 40) is missing: 0
        (9, 10, 4.0),  # user 9 is not in the data
        (1, 70, 4.0),  # nor is item 70
    ],
    columns=["user", "item", "rating"],
)
MEAN = (1.0 + 3.0 + 0.5 + 2.0 + 5.0 + 5.0 + 1.0 + 2.0 + 0.0) / 9
VALUES = [[0.0, 1.0, 3.0, 0.5, 2.0, 5.0, 0.0], [0.0, MEAN, 5.0, 1.5, 0.0, 0.0, 0.0]]


def sequence_data() -> SequenceData:
    return SequenceData(
        items=torch.full((3,), 6),
        timestamps=torch.zeros(3, dtype=torch.float64),
        ratings=None,
        offsets=torch.arange(4),
        user_ids=[1, 2, 3],
        item_ids=ITEM_IDS,
        item_info=pd.DataFrame({"title": [str(i) for i in ITEM_IDS]}),
    )


def environment(behaviour: UserBehaviour, click_threshold: float = 0.0, click_scale: float = 1.0) -> UserSimulator:
    data = sequence_data()
    values, rows, available = reward_matrix(EVENTS, data, "events", clip=(0.0, 5.0))
    response = MatrixResponse(values, rows, (0.0, 5.0), click_threshold, click_scale)
    train_end = torch.ones(3, dtype=torch.long)
    return UserSimulator(response, behaviour, data, train_end, torch.tensor([0, 1]), 4, 0, CATEGORIES, available)


def play(behaviour: UserBehaviour, slates: list[list[int]]):
    """One-item slates per user (users 1 and 2) and step; (the step each session ended at, 0 if
    still on; rewards [2, steps]; clicks [2, steps]; left [2])."""
    slates = torch.tensor(slates).unsqueeze(2)
    env = environment(behaviour)
    env.reset(torch.tensor([0, 1]))
    done, rewards, clicks = [], [], []
    for step in range(slates.shape[1]):
        click, reward, over = env.step(slates[:, step])
        done.append(over)
        rewards.append(reward)
        clicks.append(click[:, 0])
    done = torch.stack(done, 1)
    ended = torch.where(done.any(1), done.int().argmax(1) + 1, 0)
    return ended.tolist(), torch.stack(rewards, 1), torch.stack(clicks, 1), env.state.left.tolist()


def test_reward_matrix_clips_fills_averages_and_drops_unknown_ids():
    values, rows, available = reward_matrix(EVENTS, sequence_data(), "events", clip=(0.0, 5.0))
    torch.testing.assert_close(values, torch.tensor(VALUES))
    assert rows.tolist() == [0, 1, -1]  # user 3 has no row
    assert available.tolist() == [False, True, True, True, True, True, False]  # item 60 is not in the matrix
    filled, _, _ = reward_matrix(EVENTS, sequence_data(), "events", clip=(0.0, 5.0), missing=-1.0)
    assert filled[1, 4] == -1.0 and filled[0, 6] == 0.0  # only available items are filled
    with pytest.raises(DataError, match="events: a reward matrix needs ratings"):
        reward_matrix(EVENTS.drop(columns="rating"), sequence_data(), "events")
    with pytest.raises(DataError, match="none of its 1 .* pairs"):
        reward_matrix(EVENTS.iloc[-2:-1], sequence_data(), "events")


def test_every_item_consumed_rewards_are_the_matrix_and_the_quit_rule_ends_sessions():
    """EasyRL4Rec's protocol: one item per turn, always consumed (no-click utility -inf), reward its
    watch ratio; NX_0 with N = 2, M = 0: user 1 quits on the third turn (item 10's category 1 is among
    the last two), which still earns its value; user 2 on the fourth."""
    behaviour = UserBehaviour(
        mode="NX_0", quit=QuitRule(window=2), max_steps=5, no_click_utility=float("-inf"), reward="rating"
    )
    ended, rewards, clicks, left = play(behaviour, [[2, 4, 1, 5, 3], [3, 5, 2, 1, 4]])
    assert ended == [3, 4] and left == [True, True]
    torch.testing.assert_close(rewards, torch.tensor([[3.0, 2.0, 1.0, 0, 0], [1.5, 0.0, 5.0, MEAN, 0]]))
    assert clicks[:, :3].all() and not clicks[0, 3:].any()


def test_modes_repeats_and_the_rescaled_reward():
    """Item 20 three times: FreeB earns it every time; NX_0 and NX_X earn nothing for a repeat (it
    cannot be clicked, and a slate with nothing clickable is no click, not NaN); NX_X plays every
    step. The default reward is the value rescaled by the clip range, 3 / 5."""
    quit = QuitRule(window=1, threshold=5)
    sure = float("-inf")
    expected = {"FreeB": [0.6, 0.6, 0.6], "NX_0": [0.6, 0.0, 0.0], "NX_X": [0.6, 0.0, 0.0]}
    for mode, first_user in expected.items():
        behaviour = UserBehaviour(mode=mode, quit=None if mode == "NX_X" else quit, max_steps=3, no_click_utility=sure)
        ended, rewards, _, left = play(behaviour, [[2, 2, 2], [3, 3, 3]])
        torch.testing.assert_close(rewards[0], torch.tensor(first_user))
        assert ended == [3, 3] and left == [False, False]


def test_patience_reads_the_matrix_values_as_ratings():
    """Patience 2, a click rated below 1 costs 1: user 1 (0.5, then 1, 2, 3) plays all four steps;
    user 2 (0, 0) leaves on the second."""
    behaviour = UserBehaviour(
        max_steps=4, initial_patience=2.0, satisfied_rating=1.0, no_click_utility=float("-inf"), reward="rating"
    )
    ended, rewards, _, left = play(behaviour, [[3, 1, 4, 2], [4, 5, 1, 2]])
    assert ended == [4, 2] and left == [False, True]
    torch.testing.assert_close(rewards, torch.tensor([[0.5, 1.0, 2.0, 3.0], [0.0, 0.0, 0, 0]]))


def test_click_utilities_come_from_the_values_and_unavailable_items_are_never_clicked():
    env = environment(UserBehaviour(), click_threshold=2.0, click_scale=1.5)
    env.reset(torch.tensor([0, 1]))
    probs = env.click_probabilities(torch.tensor([[2, 4], [6, 1]]))
    first = torch.softmax(torch.tensor([1.5 * (3.0 - 2.0), 0.0, 0.0]), 0)
    second = torch.softmax(torch.tensor([float("-inf"), 1.5 * (MEAN - 2.0), 0.0]), 0)
    torch.testing.assert_close(probs, torch.stack([first, second]))


def test_rollout_never_shows_items_outside_the_matrix():
    """A popularity agent prefers item 60, which the matrix lacks: FreeB (only padding and unavailable
    items masked) shows item 50 twice and user 1 quits on the repeat (N = 1, M = 0)."""
    behaviour = UserBehaviour(
        mode="FreeB", quit=QuitRule(window=1), max_steps=4, no_click_utility=float("-inf"), reward="rating"
    )
    popularity = torch.arange(len(ITEM_IDS) + 1, dtype=torch.float)
    episodes = rollout(environment(behaviour), PopularityAgent(popularity), torch.tensor([0, 1]), slate_size=1)
    assert episodes.slates[:, :, 0].tolist() == [[5, 5], [5, 5]]
    torch.testing.assert_close(episodes.rewards, torch.tensor([[5.0, 5.0], [0.0, 0.0]]))
    assert episodes.blocked()[:, :, 6].all() and not episodes.blocked()[:, :, 5].any()


def test_matrix_factorisation_completes_a_low_rank_matrix():
    users, items = torch.meshgrid(torch.arange(6), torch.arange(8), indexing="ij")
    truth = 3.0 + torch.linspace(-1, 1, 6)[:, None] * torch.linspace(-1, 1, 8)[None, :]
    hidden = (users + items) % 5 == 0
    seen = ~hidden
    model = fit_matrix_factorisation(users[seen], items[seen], truth[seen], 6, 8, dim=2, l2=1e-4, steps=800)
    assert (model.rows(torch.arange(6))[hidden] - truth[hidden]).abs().max() < 0.15
    assert (model.rows(torch.arange(6)) - model.predict(users, items)).abs().max() < 1e-5
    # the same completion inside a reward matrix: observed cells kept, the rest predicted
    events = pd.DataFrame({"user": users[seen], "item": items[seen] + 1, "rating": truth[seen]})
    data = SequenceData(
        items=torch.ones(6, dtype=torch.long),
        timestamps=torch.zeros(6, dtype=torch.float64),
        ratings=None,
        offsets=torch.arange(7),
        user_ids=list(range(6)),
        item_ids=list(range(1, 9)),
        item_info=pd.DataFrame({"title": [str(i) for i in range(8)]}),
    )
    values, _, _ = reward_matrix(events, data, "events", missing="mf", mf_dim=2, mf_l2=1e-4)
    torch.testing.assert_close(values[:, 1:][seen], truth[seen])
    assert (values[:, 1:][hidden] - truth[hidden]).abs().max() < 0.3


KUAIREC_HEADER = "user_id,video_id,play_duration,video_duration,time,date,timestamp,watch_ratio\n"


def kuairec_rows(rows: list[tuple]) -> str:
    return KUAIREC_HEADER + "".join(f"{u},{v},1,1,,,{t},{w}\n" for u, v, t, w in rows)


def test_ground_truth_from_yaml_over_kuairec_files(tmp_path):
    """big_matrix is the data (with the items' first tag as category), small_matrix the ground truth
    of its users 14 and 19 and videos 148 and 183; video 200 is in the data only."""
    from lightning_rec.data.categories import CategoryField
    from lightning_rec.data.datamodule import SequenceDataModule
    from lightning_rec.data.sources import KuaiRec
    from lightning_rec.rl.environments import Environment

    big = [(u, v, t, 1.0) for u in (14, 19, 21) for t, v in enumerate((148, 183, 200, 148))]
    (tmp_path / "big_matrix.csv").write_text(kuairec_rows(big))
    small = [(14, 148, 1.0, 0.5), (14, 183, 2.0, 9.0), (19, 148, "", 2.0), (19, 183, 1.0, "inf"), (99, 148, 1.0, 1.0)]
    (tmp_path / "small_matrix.csv").write_text(kuairec_rows(small))
    (tmp_path / "item_categories.csv").write_text('video_id,feat\n148,[8]\n183,"[27, 9]"\n200,[8]\n')
    datamodule = SequenceDataModule(
        KuaiRec(str(tmp_path)), max_len=4, cache_dir=None, category=CategoryField("categories", "first")
    )
    datamodule.setup()
    parser = jsonargparse.ArgumentParser()
    parser.add_argument("--environment", type=Environment)
    config = parser.parse_string(
        f"""
        environment:
          class_path: lightning_rec.rl.environments.GroundTruth
          init_args:
            source:
              class_path: lightning_rec.data.sources.KuaiRec
              init_args: {{directory: {tmp_path}, matrix: small_matrix}}
            clip: [0, 5]
        """
    )
    ground_truth = parser.instantiate_classes(config).environment
    behaviour = UserBehaviour(
        mode="FreeB", quit=QuitRule(window=4), max_steps=30, no_click_utility=float("-inf"), reward="rating"
    )
    env = ground_truth.simulator("eval", datamodule, behaviour, 0, "cpu")
    assert [datamodule.data.user_ids[u] for u in env.users.tolist()] == [14, 19]
    assert [datamodule.data.item_ids[i - 1] for i in env.available.nonzero().squeeze(1).tolist()] == [148, 183]
    value_of = torch.zeros(datamodule.data.num_items + 1)
    value_of[datamodule.data.item_ids.index(183) + 1] = 1.0  # the agent always recommends video 183
    episodes = rollout(env, PopularityAgent(value_of), env.users, slate_size=1)
    # 183's first tag (27) repeats on the second turn: both users quit there, earning 2 x its watch ratio
    torch.testing.assert_close(episodes.rewards, torch.tensor([[5.0, 5.0], [5.0, 5.0]]))


def write_tiny_kuairec(directory) -> None:
    """big_matrix: 24 users x 14 watches of 30 videos; small_matrix: users 0-11 x videos 1-12, every
    pair, one watch ratio inf; item_categories: two tags per video."""
    import numpy as np

    rng = np.random.default_rng(0)
    big = [
        (u, int(v), t, round(float(w), 3))
        for u in range(24)
        for t, (v, w) in enumerate(zip(rng.integers(1, 31, 14), rng.gamma(2.0, 0.5, 14)))
    ]
    big[0] = (0, big[0][1], 0, 250.0)  # a replayed short video
    (directory / "big_matrix.csv").write_text(kuairec_rows(big))
    small = [(u, v, 1.0, round(float(rng.gamma(2.0, 0.5)), 3)) for u in range(12) for v in range(1, 13)]
    small[7] = small[7][:3] + ("inf",)  # a video of length 0
    (directory / "small_matrix.csv").write_text(kuairec_rows(small))
    tags = "".join(f'{v},"[{v % 4}, 7]"\n' for v in range(1, 31))
    (directory / "item_categories.csv").write_text("video_id,feat\n" + tags)


def test_the_kuairec_recipe_runs_end_to_end_on_tiny_files(tmp_path):
    """configs/kuairec/*.yaml as a user runs them, on files in KuaiRec's format: SASRec and the
    simulator on big_matrix, PPO in the simulator, the table in small_matrix's ground truth."""
    from lightning_rec.cli import main

    write_tiny_kuairec(tmp_path)
    data = ["-c", "configs/kuairec/data.yaml", "--data.init_args.source.init_args.directory", str(tmp_path)]
    data += ["--data.init_args.cache_dir", "null", "--data.init_args.batch_size", "64"]
    quick = ["--trainer.max_epochs", "1", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]
    behaviour = ["-c", "configs/kuairec/behaviour.yaml"]

    def run(command: str, recipe: str, *extra: str, out: str | None = None) -> str:
        out = str(tmp_path / (out or recipe))
        main(
            [command, *data, "-c", f"configs/kuairec/{recipe}.yaml", *extra, *quick, "--trainer.default_root_dir", out]
        )
        return out

    sasrec = run("fit", "sasrec", "--model.init_args.warmup_steps", "1") + "/checkpoints/best.ckpt"
    simulator = run("fit", "simulator") + "/checkpoints/best.ckpt"
    models = ["--model.init_args.pretrained", sasrec, "--model.init_args.simulator", simulator]
    ppo = run("fit", "ppo", *behaviour, *models) + "/checkpoints/last.ckpt"
    policies = ["--model.init_args.supervised", sasrec, "--model.init_args.policies", f"{{ppo: {ppo}}}"]
    tuned_in = ["--model.init_args.environment.init_args.train.init_args.checkpoint", simulator]
    table = pd.read_csv(run("test", "evaluation", *behaviour, *policies, *tuned_in) + "/table.csv").set_index("policy")
    assert {"random", "popularity", "supervised", "category-spread", "ppo"} <= set(table.index)
    # 12 ground-truth users, one episode each, 1 to 30 turns with a watch ratio in [0, 5] each; every
    # shown video is watched (the oracle may show nothing once every category would make the user quit)
    assert ((table["len_tra"] >= 1) & (table["len_tra"] <= 30)).all()
    assert (table["ctr"].drop("quit-oracle") == 1.0).all()
    assert ((table["R_tra"] > 0) & (table["R_tra"] <= 5 * table["len_tra"])).all()
    # the ground truth as a training environment too (it then trains on the users it judges)
    (tmp_path / "ground_truth.yaml").write_text(
        "model:\n  init_args:\n    simulator: null\n    environment:\n"
        "      class_path: lightning_rec.rl.environments.GroundTruth\n      init_args:\n"
        f"        source: {{class_path: lightning_rec.data.sources.KuaiRec, init_args: {{directory: {tmp_path}, "
        "matrix: small_matrix}}\n        clip: [0, 5]\n"
    )
    in_truth = ["-c", str(tmp_path / "ground_truth.yaml"), "--model.init_args.pretrained", sasrec]
    assert Path(run("fit", "ppo", *behaviour, *in_truth, out="ppo-ground-truth"), "checkpoints", "last.ckpt").is_file()


class CountingSource:
    """EVENTS as a data source that counts its loads."""

    def __init__(self):
        self.loads = 0

    def load(self):
        self.loads += 1
        return type("Raw", (), {"interactions": EVENTS, "name": "events"})()


def test_ground_truth_builds_its_matrix_once_per_data_and_pickles_without_it():
    import pickle
    from types import SimpleNamespace

    from lightning_rec.rl.environments import GroundTruth

    split, catalog = SimpleNamespace(train_end=torch.ones(3, dtype=torch.long)), SimpleNamespace(categories=CATEGORIES)
    datamodule = SimpleNamespace(data=sequence_data(), split=split, catalog=catalog)
    source = CountingSource()
    ground_truth = GroundTruth(source, clip=(0.0, 5.0))
    for mode in ("FreeB", "NX_0"):
        env = ground_truth.simulator("eval", datamodule, UserBehaviour(mode=mode, quit=QuitRule(4)), 0, "cpu")
        assert env.users.tolist() == [0, 1] and env.model.rating_range.tolist() == [0.0, 5.0]
    assert source.loads == 1
    assert pickle.loads(pickle.dumps(ground_truth))._built is None
