"""The context-based policy: its context is the mean summary of the turns it played, FOMAML reaches
the summary network through that context, and on a family whose best policy depends on a hidden
parameter (which genres pay) it adapts from its own episodes where the pooled policy cannot."""

from __future__ import annotations

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from test_meta import attached_environment, groups_source, simulator_path, tiny_recommender  # noqa: F401
from trainers import quiet_trainer

from lightning_rec.data import ItemCatalog, SequenceDataModule
from lightning_rec.data.categories import CategoryField
from lightning_rec.data.sources import InteractionFile
from lightning_rec.encoders import IDItemEncoder, TransformerEncoder
from lightning_rec.meta import FOMAML, AdaptivePolicy, ContextHead, ContextLoop, MetaDataModule, Reptile
from lightning_rec.meta.context import CONTEXT, previous_click
from lightning_rec.meta.family import EnvironmentFamily
from lightning_rec.meta.task_environment import TaskEnvironment, by_task
from lightning_rec.rl import ResponseModel, UserBehaviour
from lightning_rec.stages import SequentialRecommender
from lightning_rec.stages.meta_training import MetaPolicyOptimizer
from lightning_rec.stages.simulation import SimulatorTraining

pytestmark = pytest.mark.usefixtures("one_thread")


def dice(environment: TaskEnvironment) -> list[torch.Tensor]:
    """The states of every generator an exploring episode draws from."""
    return [generator.get_state() for generator in environment.random_generators().values()]


def restore(environment: TaskEnvironment, states: list[torch.Tensor]) -> None:
    for generator, state in zip(environment.random_generators().values(), states):
        generator.set_state(state)


def context_policy(num_items: int, seed: int = 0) -> AdaptivePolicy:
    policy = AdaptivePolicy(tiny_recommender(num_items, 8, 1, 50, seed=seed), ContextHead(6)).eval()
    torch.nn.init.normal_(policy.head.apply_context.weight, std=0.5)  # a head that reads its context
    return policy


def clicking(max_steps: int = 3) -> UserBehaviour:
    """Sessions of `max_steps` slates with a click on each: every turn tells the summary something."""
    return UserBehaviour(mode="NX_X", max_steps=max_steps, no_click_utility=float("-inf"))


def test_a_fresh_context_head_scores_exactly_like_the_recommender():
    recommender = tiny_recommender().eval()
    policy = AdaptivePolicy(recommender, ContextHead(4)).eval()
    input, history = torch.tensor([[0, 0, 3, 4]]), torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(policy(input, history=history), recommender.score(input, history))


@pytest.mark.parametrize("knob, best", [(50.0, "the latest item"), (-50.0, "any other")])
def test_the_repeat_knob_moves_scores_towards_or_away_from_the_latest_item(knob, best):
    """`repeat(context)` scales the latest item's vector into the state: a large positive knob makes
    the item just seen the top one (the latest real item, at every position), a negative one its
    score the lowest."""
    recommender = tiny_recommender().eval()
    policy = AdaptivePolicy(recommender, ContextHead(4)).eval()
    torch.nn.init.constant_(policy.head.repeat.bias, knob)
    input = torch.tensor([[0, 0, 3, 4], [1, 2, 7, 9]])
    scores = policy(input, history=torch.zeros_like(input))[:, 1:]  # item 0 is padding
    latest = scores.gather(1, input[:, -1:] - 1).squeeze(1)
    if best == "the latest item":
        assert (latest == scores.max(1).values).all()
    else:
        assert (latest == scores.min(1).values).all()


def test_the_context_is_the_mean_summary_of_every_turn_played_so_far(groups_source, simulator_path):  # noqa: F811
    dm, environment = attached_environment(groups_source, simulator_path, episodes=4, behaviour=clicking())
    tasks = dm.held_out_segment_tasks()
    policy = context_policy(dm.data.num_items)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    loop = ContextLoop(policy, 2, environment)
    items = loop.item_table().detach()
    states = dice(environment)
    fast = list(loop.fast_weights(tasks, items=items))
    assert len(fast) == 3 and torch.equal(fast[0][CONTEXT], torch.zeros(len(tasks), 6))
    restore(environment, states)  # the same episodes again, summarised by hand
    total, count = 0, 0
    for step in range(2):
        episodes = loop._episodes({CONTEXT: fast[step][CONTEXT].detach()}, tasks, "train", True, items)
        summaries, valid = policy.head.turns(episodes, items)
        total = total + by_task(summaries * valid.unsqueeze(-1), len(tasks)).sum((1, 2))
        count = count + by_task(valid, len(tasks)).sum((1, 2)).unsqueeze(1)
        torch.testing.assert_close(fast[step + 1][CONTEXT], total / count)
    assert not torch.allclose(fast[1][CONTEXT], fast[2][CONTEXT])  # the second step's episodes count too
    assert fast[2][CONTEXT].requires_grad  # attached to the summary network, for the meta-gradient
    for n, p in policy.named_parameters():
        assert torch.equal(p, before[n]) and p.grad is None, n
    cold = next(iter(dm.test_dataloader()[0]))  # cold-start tasks: nothing to play, the context stays empty
    assert all(torch.equal(w[CONTEXT], torch.zeros(len(cold), 6)) for w in loop.fast_weights(cold, items=items))


def test_fomaml_reaches_the_summary_network_through_the_context(groups_source, simulator_path):  # noqa: F811
    """FOMAML's gradient of the summary network = the gradient of the query loss at the adapted
    context taken straight through it (the same episodes)."""
    dm, environment = attached_environment(
        groups_source, simulator_path, episodes=32, temperature=2.0, behaviour=UserBehaviour(mode="NX_X", max_steps=5)
    )  # clicks on some slates only: returns that differ, advantages that are not all 0
    tasks = dm.held_out_segment_tasks()
    policy = context_policy(dm.data.num_items)
    loop = ContextLoop(policy, 1, environment)
    states = dice(environment)
    gradient, _ = FOMAML().meta_gradient(loop, tasks)
    assert CONTEXT not in gradient and "head.apply_context.weight" in gradient
    restore(environment, states)
    items = loop.item_table()
    adapted = loop.adapt(tasks, items=items)
    summary = dict(policy.head.summary.named_parameters())
    expected = torch.autograd.grad(loop.query_loss(adapted, tasks, items).mean(), list(summary.values()))
    for (name, _), g in zip(summary.items(), expected):
        torch.testing.assert_close(gradient[f"head.summary.{name}"], g, atol=1e-6, rtol=1e-4)
    assert any(g.abs().sum() > 0 for g in expected)


def test_a_context_head_needs_an_environment_and_fomaml():
    with pytest.raises(ValueError, match="needs an environment"):
        MetaPolicyOptimizer(recommender=tiny_recommender(), head=ContextHead())
    environment = TaskEnvironment("unused.ckpt")
    with pytest.raises(ValueError, match="not with Reptile or learn_inner_lr"):
        MetaPolicyOptimizer(
            recommender=tiny_recommender(), head=ContextHead(), environment=environment, algorithm=Reptile()
        )


# -- a family with a hidden parameter ------------------------------------------------------------------
def write_genre_pairs(path, num_users: int = 240, genres: int = 4, per_genre: int = 10) -> InteractionFile:
    """Each user consumes items of two of the four genres: no genre is more popular than another, so
    which genre a population pays for is not in the data."""
    rng = np.random.default_rng(0)
    rows = []
    for user in range(num_users):
        pair = rng.choice(genres, 2, replace=False)
        for t in range(rng.integers(14, 26)):
            rows.append((f"u{user}", int(rng.choice(pair) * per_genre + rng.integers(per_genre)) + 1, t))
    pd.DataFrame(rows, columns=["user", "item", "timestamp"]).to_csv(path, index=False)
    item_path = str(path).replace(".csv", "_items.csv")
    genre = [f"g{i // per_genre}" for i in range(genres * per_genre)]
    pd.DataFrame({"item": np.arange(1, genres * per_genre + 1), "genres": genre}).to_csv(item_path, index=False)
    return InteractionFile(str(path), item_path=item_path)


def paying(factors: dict[int, float]) -> UserBehaviour:
    """Four slates of three, one click on each; a click earns its genre's factor (genre gi is category i + 1)."""
    return UserBehaviour(mode="NX_X", max_steps=4, no_click_utility=float("-inf"), category_reward=factors)


def test_the_context_start_adapts_to_a_hidden_reward_where_the_pooled_start_cannot(tmp_path):
    """Train environments each pay for one genre; held out: one pays for two genres, one mostly for a
    third. Meta-trained with 2 adaptation steps, the context start earns after them at least 1.3x what
    the same head trained without adaptation (the pooled start) earns after the same steps, on the
    same users and dice; and it is adaptation that pays: before it, neither start is ahead."""
    source = write_genre_pairs(tmp_path / "pairs.csv")
    L.seed_everything(0)
    recommender = SequentialRecommender(
        IDItemEncoder(16), TransformerEncoder(16, 1, 2, max_len=12, dropout=0.1), lr=5e-3
    )
    quiet_trainer(max_epochs=15, limit_val_batches=0).fit(
        recommender, SequenceDataModule(source, max_len=12, batch_size=32, cache_dir=None)
    )
    simulator = SimulatorTraining(ResponseModel(dim=16, dropout=0.0, init_std=0.5), num_negatives=4, lr=1e-2)
    trainer = quiet_trainer(max_epochs=8, limit_val_batches=0)
    trainer.fit(simulator, SequenceDataModule(source, max_len=8, batch_size=32, cache_dir=None))
    trainer.save_checkpoint(tmp_path / "simulator.ckpt")
    family = EnvironmentFamily(
        train={f"pays-g{g}": paying({c: float(c == g + 1) for c in range(1, 5)}) for g in range(4)},
        held_out={
            "pays-g0-g1": paying({1: 1.0, 2: 1.0, 3: 0.0, 4: 0.0}),
            "mostly-g2": paying({1: 0.2, 2: 0.2, 3: 1.0, 4: 0.2}),
        },
    )
    returns = {}
    for start, inner_steps in (("context", 2), ("pooled", 0)):
        L.seed_everything(0)
        policy = SequentialRecommender(IDItemEncoder(16), TransformerEncoder(16, 1, 2, max_len=12, dropout=0.1))
        policy.build(ItemCatalog(40, None, torch.zeros(41)))
        policy.load_state_dict(recommender.state_dict())
        model = MetaPolicyOptimizer(
            recommender=policy,
            head=ContextHead(32),
            inner_steps=inner_steps,
            curve_steps=2,
            meta_parameters="adapted",
            meta_lr=0.02,
            environment=TaskEnvironment(str(tmp_path / "simulator.ckpt"), slate_size=3, episodes=16, family=family),
        )
        dm = MetaDataModule(
            source=source,
            cache_dir=None,
            category=CategoryField("genres", "first"),
            num_segments=6,
            held_out_segments=2,
            train_ks=[2],
            test_ks=[2],
            val_k=2,
            num_query=3,
            tasks_per_batch=8,
            segment_tasks_per_epoch=16,
            support_windows=3,
            segment_window=6,
            segment_query=4,
            max_len=12,
        )
        trainer = quiet_trainer(max_steps=100, limit_val_batches=0, default_root_dir=tmp_path / start)
        trainer.fit(model, dm)
        trainer.test(model, dm, verbose=False)
        curves = pd.read_csv(tmp_path / start / "meta" / "adaptation_curves.csv")
        curves = curves[(curves.metric == "return") & (curves.start == "meta") & curves.tasks.str.contains("held_out/")]
        returns[start] = curves.pivot(index="tasks", columns="step", values="value")
    context, pooled = returns["context"], returns["pooled"]
    assert list(context.index) == ["segment/held_out/mostly-g2", "segment/held_out/pays-g0-g1"]
    assert (context[2] >= 1.3 * pooled[2]).all(), (context, pooled)
    assert (context[0] <= 1.15 * pooled[0]).all() and (context[2] >= 1.3 * context[0]).all(), (context, pooled)


def test_each_turn_sees_the_episodes_previous_click():
    """The vector of the last click before each turn (turns without a click are skipped over; zero
    before the first click), each episode on its own."""
    vectors = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [6.0, 7.0, 8.0, 9.0, 10.0]]).unsqueeze(-1)
    clicked = torch.tensor([[False, True, False, True, True], [True, False, False, False, True]])
    before = previous_click(vectors * clicked.unsqueeze(-1), clicked).squeeze(-1)
    assert before.tolist() == [[0.0, 0.0, 2.0, 2.0, 4.0], [0.0, 6.0, 6.0, 6.0, 6.0]]
