"""Meta-learning: tasks, k-means segments, the functional inner loop, FOMAML/Reptile updates checked
against hand-computed ones, and meta-training that beats the plain start on structured data."""

from __future__ import annotations

import copy

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader
from trainers import quiet_trainer

from lightning_rec.data import ItemCatalog, SequenceDataModule
from lightning_rec.data.datasets import keep_batch
from lightning_rec.data.errors import DataError
from lightning_rec.data.preprocess import PreprocessOptions, load_or_build
from lightning_rec.data.sources import InteractionFile
from lightning_rec.encoders import IDItemEncoder, TransformerEncoder
from lightning_rec.meta import (
    FOMAML,
    Adapter,
    AdaptivePolicy,
    InnerLoop,
    MetaDataModule,
    Reptile,
    TaskBatch,
    UserHead,
    cold_start_tasks,
    kmeans,
    segment_tasks,
)
from lightning_rec.meta.task_batch import Segments
from lightning_rec.meta.users import genre_taste
from lightning_rec.stages import SequentialRecommender
from lightning_rec.stages.meta_training import MetaPolicyOptimizer

pytestmark = pytest.mark.usefixtures("one_thread")


def write_group_dataset(
    path, num_users: int = 160, groups: int = 4, per_group: int = 10, late_users: int = 0, seed: int = 0
) -> InteractionFile:
    """Each user consumes items of one genre only (random order, 12 to 24 events): which genre is a
    user's is only known from their own events, the structure meta-learning can exploit. The last
    `late_users` users arrive after everyone else's events."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(num_users):
        group = rng.integers(groups)
        arrival = 1000 if user >= num_users - late_users else 0
        for t in range(rng.integers(12, 25)):
            rows.append((f"u{user}", int(group * per_group + rng.integers(per_group)) + 1, arrival + t))
    pd.DataFrame(rows, columns=["user", "item", "timestamp"]).to_csv(path, index=False)
    item_path = str(path).replace(".csv", "_items.csv")
    pd.DataFrame(
        {
            "item": np.arange(1, groups * per_group + 1),
            "genres": [f"g{i // per_group}|all" for i in range(groups * per_group)],
        }
    ).to_csv(item_path, index=False)
    return InteractionFile(str(path), item_path=item_path)


@pytest.fixture(scope="module")
def groups_source(tmp_path_factory) -> InteractionFile:
    return write_group_dataset(tmp_path_factory.mktemp("meta") / "groups.csv")


def tiny_recommender(
    num_items: int = 12, dim: int = 8, layers: int = 2, max_len: int = 12, seed: int = 0
) -> SequentialRecommender:
    torch.manual_seed(seed)
    model = SequentialRecommender(
        IDItemEncoder(dim, init_std=0.3), TransformerEncoder(dim, layers, 2, max_len=max_len, dropout=0.0)
    )
    model.build(ItemCatalog(num_items, None, torch.arange(num_items + 1, dtype=torch.float)))
    return model


def random_tasks(num_tasks: int = 3, num_items: int = 12, seed: int = 0) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    support_input = torch.randint(1, num_items + 1, (num_tasks, 2, 5), generator=g)
    support_input[:, :, :2] = 0
    support_target = torch.randint(1, num_items + 1, (num_tasks, 2, 5), generator=g) * (support_input != 0)
    query_input = torch.randint(1, num_items + 1, (num_tasks, 4, 6), generator=g)
    none = torch.full((num_tasks,), -1)
    return TaskBatch(
        support_input,
        support_target,
        query_input,
        query_input,
        torch.randint(1, num_items + 1, (num_tasks, 4), generator=g),
        none,
        torch.zeros(num_tasks, dtype=torch.long),
        torch.arange(num_tasks),
        none,
    )


# -- segments and tasks ----------------------------------------------------------------------------
def test_kmeans_recovers_separated_clusters_and_never_leaves_one_empty():
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    truth = torch.arange(3).repeat_interleave(30)
    assignment, centroids = kmeans(centres[truth] + 0.3 * torch.randn(90, 2), 3, seed=1)
    pairs = set(zip(truth.tolist(), assignment.tolist()))
    assert len(pairs) == 3  # a one-to-one map between true clusters and found ones
    assert torch.cdist(centroids, centres).min(1).values.max() < 0.5
    duplicates = torch.zeros(5, 2)  # 5 identical points into 3 clusters: still 3 non-empty ones
    assert torch.bincount(kmeans(duplicates, 3)[0], minlength=3).min() >= 1
    with pytest.raises(ValueError, match="num_clusters"):
        kmeans(duplicates, 6)


def test_cold_start_tasks_support_the_first_k_events_and_query_the_next(groups_source):
    data = load_or_build(groups_source, PreprocessOptions(), None)
    user = int(torch.nonzero(data.lengths >= 15)[0])
    events = data.user_history(user)
    tasks = cold_start_tasks(data, torch.tensor([user, user]), torch.tensor([1, 3]), num_query=4, max_k=5)
    assert tasks.support_input.shape == (2, 1, 5) and tasks.query_input.shape == (2, 4, 8)
    # k=3: the first event is predicted from an empty context, the next two from the events before
    assert tasks.support_target[1, 0].tolist() == [0, 0] + events[:3].tolist()
    assert tasks.support_input[1, 0].tolist() == [0, 0, 0] + events[:2].tolist()
    assert tasks.support_target[0, 0].tolist() == [0, 0, 0, 0, events[0].item()]
    # query row j predicts event k + j from every event before it, which it also masks
    assert tasks.query_target[1].tolist() == events[3:7].tolist()
    assert tasks.query_input[1, 2].tolist() == [0, 0, 0] + events[:5].tolist()
    assert torch.equal(tasks.query_history, tasks.query_input)
    short = int(torch.nonzero(data.lengths < 15)[0])  # rows past a user's last event are empty
    tail = cold_start_tasks(data, torch.tensor([short]), torch.tensor([5]), num_query=20, max_k=5).query_target[0]
    assert (tail[: data.lengths[short] - 5] != 0).all() and (tail[data.lengths[short] - 5 :] == 0).all()
    with pytest.raises(ValueError, match="k must be in"):
        cold_start_tasks(data, torch.tensor([user]), torch.tensor([6]), 4, 5)
    # a task can start mid-way through the history and stop at a position (the end of training)
    later = cold_start_tasks(
        data, torch.tensor([user]), torch.tensor([2]), 4, 5, first=torch.tensor([3]), end=torch.tensor([8])
    )
    assert later.support_target[0, 0].tolist() == [0, 0, 0] + events[3:5].tolist() and later.start.tolist() == [5]
    assert later.query_target[0].tolist() == events[5:8].tolist() + [0]
    assert later.query_input[0, 0].tolist() == [0] * 6 + events[3:5].tolist()  # nothing before `first`


def test_segment_tasks_and_sampling_stay_inside_the_segment(groups_source):
    data = load_or_build(groups_source, PreprocessOptions(), None)
    assignment = torch.arange(data.num_users) % 3
    segments = Segments(assignment, torch.arange(data.num_users)[assignment != 2])  # segment 2 held out
    drawn = segments.sample(torch.tensor([0, 1, 1]), 50, torch.Generator().manual_seed(0))
    assert (assignment[drawn] == torch.tensor([0, 1, 1]).unsqueeze(1)).all()
    with pytest.raises(ValueError, match="empty segment"):
        segments.sample(torch.tensor([2]), 1)
    users = torch.tensor([[0, 1]])
    tasks = segment_tasks(
        data,
        torch.tensor([0]),
        users,
        torch.tensor([[4, 5]]),
        torch.tensor([[2, -1]]),
        torch.tensor([[6, 1]]),
        window=3,
    )
    events = data.user_history(1)
    assert (
        tasks.support_input[0, 1].tolist() == events[1:4].tolist()
        and tasks.support_target[0, 1].tolist() == events[2:5].tolist()
    )
    assert tasks.query_target[0].tolist() == [data.user_history(2)[6].item(), 0]  # user -1 is a padding row
    assert tasks.query_history[0, 0].tolist() == data.user_history(2)[:6].tolist()


def test_unseen_cold_start_users_arrive_after_the_cut_and_meta_training_reads_training_events_only(tmp_path):
    source = write_group_dataset(tmp_path / "late.csv", num_users=120, late_users=20)
    dm = MetaDataModule(
        source=source,
        cache_dir=None,
        split="temporal",
        cold_start_users="unseen",
        num_segments=3,
        held_out_segments=1,
        train_ks=[2, 3],
        test_ks=[3],
        val_k=3,
        num_query=4,
        tasks_per_batch=64,
    )
    dm.setup()
    late = set(range(100, 120))
    user_ids = [int(u[1:]) for u in dm.data.user_ids]
    assert {user_ids[u] for u in torch.cat([dm.users["val"], dm.users["test"]]).tolist()} == late
    assert (dm.split.train_end[dm.users["test"]] == 0).all() and len(dm.users["val"]) > 0
    for batch in dm.train_dataloader()["cold_start"]:  # every event a task touches is a training event
        end = dm.split.train_end[batch.user]
        assert (batch.start <= end).all()
        last_query = batch.start + (batch.query_target != 0).sum(1)
        assert (last_query <= end).all()


def test_genre_taste_is_each_users_share_of_genres(groups_source):
    data = load_or_build(groups_source, PreprocessOptions(), None)
    taste = genre_taste(data, data.lengths)
    assert torch.allclose(taste.sum(1), torch.ones(data.num_users))
    assert torch.allclose(taste.max(1).values, torch.full((data.num_users,), 0.5))  # "gX|all": half each
    data.item_info = data.item_info.drop(columns=["genres"])
    with pytest.raises(DataError, match="genres"):
        genre_taste(data, data.lengths)


def test_datamodule_keeps_held_out_segments_and_evaluation_users_out_of_meta_training(groups_source):
    dm = MetaDataModule(
        source=groups_source,
        cache_dir=None,
        num_segments=4,
        held_out_segments=1,
        train_ks=[1, 2],
        test_ks=[1, 3],
        val_k=2,
        num_query=3,
        tasks_per_batch=8,
        segment_tasks_per_epoch=4,
        support_windows=3,
        segment_window=4,
        segment_query=5,
    )
    dm.setup()
    parts = {name: set(users.tolist()) for name, users in dm.users.items()}
    assert sum(map(len, parts.values())) == len(set().union(*parts.values()))  # disjoint
    assert set(dm.assignment[dm.users["held_out"]].tolist()) == set(dm.held_out.tolist())
    taste_group = genre_taste(dm.data, dm.split.train_end).argmax(1)  # genre segments recover the groups
    assert len(set(zip(taste_group.tolist(), dm.assignment.tolist()))) == 4
    batch = next(iter(dm.train_dataloader()["cold_start"]))
    starts = dm.data.offsets[dm.users["train"]]
    assert set(batch.support_target[batch.support_target != 0].tolist()) <= set(dm.data.items.tolist())
    assert len(batch) == 8 and batch.support_input.shape[-1] == 3
    segment_batch = next(iter(dm.train_dataloader()["segment"]))
    assert segment_batch.support_input.shape == (4, 3, 4) and segment_batch.query_input.shape == (4, 5, 4)
    held_out = dm.held_out_segment_tasks()
    assert len(held_out) == 1 and (held_out.query_target != 0).sum() == len(dm.users["held_out"])
    assert len(dm.test_dataloader()) == 3 and starts.numel() > 0


# -- the policy and the inner loop -----------------------------------------------------------------
@pytest.mark.parametrize("head", [None, UserHead(), Adapter(4)])
def test_a_fresh_head_scores_exactly_like_the_recommender(head):
    recommender = tiny_recommender().eval()
    policy = AdaptivePolicy(recommender, head).eval()
    input = torch.tensor([[0, 0, 3, 4], [0, 0, 0, 0]])
    history = torch.tensor([[1, 2, 3, 4], [0, 0, 0, 0]])
    torch.testing.assert_close(policy(input, history=history), recommender.score(input, history))


def test_adapted_parameter_sets():
    policy = AdaptivePolicy(tiny_recommender(), UserHead())
    names = [n for n, _ in policy.named_parameters()]
    assert policy.adapted_names("all") == names
    assert policy.adapted_names("head") == ["head.linear.weight", "head.linear.bias"]
    top = policy.adapted_names("top_layers", num_top_layers=1)
    assert any(".blocks.1." in n for n in top) and not any(".blocks.0." in n for n in top) and "head.linear.bias" in top
    assert "recommender.sequence_encoder.norm.weight" in top and "recommender.item_encoder.embedding.weight" not in top
    with pytest.raises(ValueError, match="num_top_layers"):
        policy.adapted_names("top_layers", num_top_layers=3)
    with pytest.raises(ValueError, match="needs a head"):
        AdaptivePolicy(tiny_recommender()).adapted_names("head")


def manual_adapt(
    policy: AdaptivePolicy, names: list[str], tasks: TaskBatch, t: int, steps: int, lr: float, with_query: bool = False
) -> AdaptivePolicy:
    """Task t adapted the slow, obvious way: a deep copy and plain autograd SGD steps."""
    copy_ = copy.deepcopy(policy)
    params = dict(copy_.named_parameters())
    for _ in range(steps):
        loss = copy_(tasks.support_input[t], tasks.support_target[t])
        if with_query:
            loss = loss + copy_(tasks.query_input[t], tasks.query_target[t])
        grads = torch.autograd.grad(loss, [params[n] for n in names])
        with torch.no_grad():
            for n, g in zip(names, grads):
                params[n] -= lr * g
    return copy_


@pytest.mark.parametrize("adapt", ["all", "top_layers", "head"])
def test_inner_loop_matches_plain_sgd_and_leaves_the_meta_parameters_untouched(adapt):
    policy = AdaptivePolicy(tiny_recommender(), UserHead())
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    tasks = random_tasks()
    loop = InnerLoop(policy, policy.adapted_names(adapt), steps=3, lr=0.5)
    fast = loop.adapt(tasks)
    for n, p in policy.named_parameters():
        assert torch.equal(p, before[n]) and p.grad is None, n
    assert set(fast) == set(loop.names) and all(w.shape[0] == 3 and not w.requires_grad for w in fast.values())
    for t in range(3):
        expected = dict(manual_adapt(policy, loop.names, tasks, t, 3, 0.5).named_parameters())
        for n in loop.names:
            torch.testing.assert_close(fast[n][t], expected[n].detach(), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(fast[loop.names[0]][0], before[loop.names[0]])


def test_fomaml_meta_gradient_is_the_mean_query_gradient_at_the_adapted_parameters():
    policy = AdaptivePolicy(tiny_recommender(), UserHead())
    tasks = random_tasks()
    loop = InnerLoop(policy, policy.adapted_names("head"), steps=2, lr=0.5)
    gradient, loss = FOMAML().meta_gradient(loop, tasks)
    expected = {n: torch.zeros_like(p) for n, p in policy.named_parameters()}
    losses = []
    for t in range(3):
        adapted = manual_adapt(policy, loop.names, tasks, t, 2, 0.5)
        query_loss = adapted(tasks.query_input[t], tasks.query_target[t])
        losses.append(query_loss.item())
        for n, g in zip(dict(adapted.named_parameters()), torch.autograd.grad(query_loss, list(adapted.parameters()))):
            expected[n] += g / 3
    assert set(gradient) == set(expected)  # the frozen body gets its query gradient too
    for n in expected:
        torch.testing.assert_close(gradient[n], expected[n], atol=1e-5, rtol=1e-4)
    assert loss.item() == pytest.approx(np.mean(losses), rel=1e-5)


def test_reptile_meta_gradient_points_from_the_mean_adapted_parameters_to_the_start():
    policy = AdaptivePolicy(tiny_recommender(), UserHead())
    tasks = random_tasks()
    loop = InnerLoop(policy, policy.adapted_names("top_layers"), steps=2, lr=0.3)
    gradient, _ = Reptile().meta_gradient(loop, tasks)
    params = dict(policy.named_parameters())
    adapted = [
        dict(manual_adapt(policy, loop.names, tasks, t, 2, 0.3, with_query=True).named_parameters()) for t in range(3)
    ]
    assert set(gradient) == set(loop.names)
    for n in loop.names:
        expected = params[n].detach() - torch.stack([a[n].detach() for a in adapted]).mean(0)
        torch.testing.assert_close(gradient[n], expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("algorithm", [FOMAML(), Reptile()])
def test_a_training_step_is_one_adamw_step_on_the_meta_gradient(algorithm):
    model = MetaPolicyOptimizer(
        recommender=tiny_recommender(),
        head=UserHead(),
        algorithm=algorithm,
        adapt="head",
        inner_steps=2,
        inner_lr=0.5,
        meta_lr=0.01,
        gradient_clip=0.0,
    )
    tasks = random_tasks()
    start = copy.deepcopy(model.policy)
    gradient, _ = algorithm.meta_gradient(InnerLoop(start, model.inner.names, 2, 0.5), tasks)
    reference = dict(start.named_parameters())
    optimizer = torch.optim.AdamW([reference[n] for n in gradient], lr=0.01, weight_decay=0.0)
    for n, g in gradient.items():
        reference[n].grad = g
    optimizer.step()
    trainer = quiet_trainer(max_steps=1, num_sanity_val_steps=0)
    trainer.fit(model, train_dataloaders=DataLoader([{"cold_start": tasks}], batch_size=None, collate_fn=keep_batch))
    for n, p in model.policy.named_parameters():
        torch.testing.assert_close(p.detach(), reference[n].detach(), atol=1e-6, rtol=1e-5)
    for n, p in model.plain.named_parameters():  # the plain start stays the pretrained one
        torch.testing.assert_close(p, dict(start.named_parameters())[n].detach() if n not in gradient else p)
    assert any(not torch.equal(p, q) for p, q in zip(model.policy.parameters(), model.plain.parameters()))


# -- meta-training end to end ----------------------------------------------------------------------
def test_meta_training_on_shared_structure_beats_the_plain_start(groups_source, tmp_path):
    """Plain start: an untrained recommender. After meta-training, the same 2-step adaptation on a
    cold-start user's first 3 events ranks their next events far better than from the plain start."""
    L.seed_everything(0)
    dm = MetaDataModule(
        source=groups_source,
        cache_dir=None,
        num_segments=4,
        held_out_segments=1,
        train_ks=[1, 2, 3],
        test_ks=[1, 3],
        val_k=3,
        num_query=3,
        tasks_per_batch=8,
        segment_tasks_per_epoch=8,
        support_windows=3,
        segment_window=6,
        segment_query=6,
        online_start=1,
        online_horizon=4,
    )
    recommender = SequentialRecommender(IDItemEncoder(16), TransformerEncoder(16, 1, 2, max_len=12, dropout=0.1))
    model = MetaPolicyOptimizer(
        recommender=recommender, head=UserHead(), adapt="head", inner_steps=2, inner_lr=0.5, meta_lr=0.01
    )
    trainer = quiet_trainer(max_epochs=3, default_root_dir=tmp_path)
    trainer.fit(model, dm)
    assert "val/ndcg@10" in trainer.callback_metrics
    results = trainer.test(model, dm, verbose=False)[0]
    assert (
        results["test/cold_start/k3/meta_adapted_ndcg@10"]
        > 1.5 * results["test/cold_start/k3/plain_adapted_ndcg@10"] + 0.05
    )
    table = pd.read_csv(tmp_path / "meta" / "meta_test.csv")
    assert table.tasks.tolist() == ["cold_start/k1", "cold_start/k3", "segment/held_out"] and set(table.metric) == {
        "ndcg@10"
    }
    assert (tmp_path / "meta" / "adaptation_curves_ndcg10.png").stat().st_size > 0
    trainer.predict(model, dm)
    online = pd.read_csv(tmp_path / "meta" / "online_summary.csv").set_index("policy")["mean_ndcg@10"]
    assert online["meta/adapted"] > 1.5 * max(online["plain/adapted"], online["plain/static"])


# -- the simulator as the tasks' environment -------------------------------------------------------
@pytest.fixture(scope="module")
def simulator_path(groups_source, tmp_path_factory) -> str:
    from lightning_rec.data import SequenceDataModule
    from lightning_rec.rl import ResponseModel
    from lightning_rec.stages.simulation import SimulatorTraining

    L.seed_everything(0)
    module = SimulatorTraining(ResponseModel(dim=16, dropout=0.0, init_std=0.5), num_negatives=4, lr=1e-2)
    trainer = quiet_trainer(max_epochs=8, limit_val_batches=0)
    trainer.fit(module, SequenceDataModule(groups_source, max_len=8, batch_size=32, cache_dir=None))
    path = str(tmp_path_factory.mktemp("simulator") / "simulator.ckpt")
    trainer.save_checkpoint(path)
    return path


def attached_environment(groups_source, simulator_path, **kwargs):
    from lightning_rec.meta.task_environment import TaskEnvironment

    dm = MetaDataModule(
        source=groups_source,
        cache_dir=None,
        num_segments=4,
        held_out_segments=1,
        train_ks=[1, 2],
        test_ks=[2],
        val_k=2,
        num_query=3,
        support_windows=3,
        segment_window=6,
        segment_query=4,
    )
    dm.setup()
    environment = TaskEnvironment(simulator_path, **{"slate_size": 3, **kwargs})
    environment.attach(dm.data, dm.split.train_end, dm.assignment, torch.cat([dm.users["val"], dm.users["test"]]))
    return dm, environment


def test_environment_plays_each_segment_with_its_own_members_and_evaluates_reproducibly(groups_source, simulator_path):
    dm, environment = attached_environment(groups_source, simulator_path, episodes=5)
    tasks = dm.held_out_segment_tasks()
    users, starts = environment._players("eval", tasks, torch.Generator().manual_seed(0))
    assert users.shape == (1, 5) and starts is None
    assert (dm.assignment[users] == dm.held_out[0]).all() and environment.simulators["eval"].allowed[users].all()
    assert not torch.isin(users, torch.cat([dm.users["val"], dm.users["test"]])).any()
    policy = AdaptivePolicy(tiny_recommender(dm.data.num_items, 8, 1, 50)).eval()
    loop = InnerLoop(policy, policy.adapted_names("all"), 1, 0.1, environment=environment)
    first, second = loop.returns(loop.adapt(tasks), tasks), loop.returns(loop.adapt(tasks), tasks)
    assert first.shape == (1, 5) and torch.equal(first, second)  # greedy evaluation: same users, same dice
    cold = cold_start_tasks(dm.data, dm.users["test"][:6], torch.full((6,), 2), 3, 2)
    rows = environment.task_rows("eval", cold)
    assert torch.equal(rows, environment.simulators["eval"].allowed[cold.user])
    assert loop.returns(loop.adapt(cold), cold).shape == (int(rows.sum()), 1)
    # keyed dice: a task's greedy episodes do not depend on the other tasks of its batch (nor on process count)
    keyed, _ = environment._players("eval", tasks, None)
    assert (dm.assignment[keyed] == dm.held_out[0]).all() and torch.equal(
        keyed, environment._players("eval", tasks, None)[0]
    )
    played = cold.apply(lambda t: t[rows])
    whole = loop.returns(loop.adapt(played), played)
    assert len(played) >= 2
    middle = len(played) // 2
    halves = [played.apply(lambda t, part=part: t[part]) for part in (slice(0, middle), slice(middle, None))]
    assert torch.equal(whole, torch.cat([loop.returns(loop.adapt(half), half) for half in halves]))


def test_reinforce_loss_raises_the_log_probability_of_slates_with_positive_advantage(groups_source, simulator_path):
    dm, environment = attached_environment(groups_source, simulator_path, temperature=2.0)
    policy = AdaptivePolicy(tiny_recommender(dm.data.num_items, 8, 1, 50)).eval()
    loop = InnerLoop(policy, policy.adapted_names("all"), 1, 0.1, loss="policy_gradient", environment=environment)
    adapted, frozen = loop.split()
    histories = torch.tensor([[0, 3, 4], [5, 6, 7]])
    blocked = torch.zeros(2, dm.data.num_items + 1, dtype=torch.bool)
    blocked[0, [3, 4, 11]] = True  # the softmax the slate was drawn from had these masked
    slates = torch.tensor([[8, 9], [10, 0]])
    advantages = torch.tensor([2.0, -1.0])
    live = torch.tensor([True, True])
    log_probs = torch.log_softmax(policy(histories).masked_fill(blocked, float("-inf")) / 2.0, dim=-1)
    expected = -(2.0 * (log_probs[0, 8] + log_probs[0, 9]) - 1.0 * log_probs[1, 10]) / 2
    inputs = (histories, blocked, slates, advantages, live)
    torch.testing.assert_close(loop._reinforce(adapted, frozen, None, *inputs), expected)
    items = policy.recommender.item_encoder()  # a table computed beforehand gives the same loss
    torch.testing.assert_close(loop._reinforce(adapted, frozen, items, *inputs), expected)


def test_policy_gradient_on_the_cached_states_matches_encoding_every_history_again(groups_source, simulator_path):
    """With only the head adapting, rollouts keep the states the policy acted on and the inner
    REINFORCE steps reuse them; the query loss encodes its histories again in one batch, attached,
    so the body still gets its meta-gradient. Same episodes, same meta-gradient as the path that
    encodes every history under vmap."""
    dm, environment = attached_environment(groups_source, simulator_path, episodes=16, temperature=2.0, slate_size=10)
    tasks = dm.held_out_segment_tasks()
    policy = AdaptivePolicy(tiny_recommender(dm.data.num_items, 8, 1, 50), UserHead()).eval()
    results = []
    for head_only in (True, False):
        loop = InnerLoop(policy, policy.adapted_names("head"), 2, 0.5, loss="policy_gradient", environment=environment)
        loop.head_only = head_only
        environment.generator.manual_seed(0)
        environment.simulators["train"].seed(0)
        results.append(FOMAML().meta_gradient(loop, tasks))
        items = loop.item_table().detach()
        episodes = loop._episodes(next(loop.fast_weights(tasks, items=items)), tasks, "train", True, items)
        assert (episodes.states is not None) == head_only
    (cached, cached_loss), (encoded, encoded_loss) = results
    assert set(cached) == set(encoded) and "recommender.sequence_encoder.norm.weight" in cached
    for name in encoded:
        torch.testing.assert_close(cached[name], encoded[name], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(cached_loss, encoded_loss)
    assert all(
        cached[name].abs().sum() > 0 for name in ("head.linear.weight", "recommender.sequence_encoder.norm.weight")
    )


def test_meta_training_with_the_policy_gradient_inner_loss_reports_returns(groups_source, simulator_path, tmp_path):
    from lightning_rec.meta.task_environment import TaskEnvironment

    L.seed_everything(0)
    dm = MetaDataModule(
        source=groups_source,
        cache_dir=None,
        num_segments=4,
        held_out_segments=1,
        train_ks=[2],
        test_ks=[2],
        val_k=2,
        num_query=3,
        tasks_per_batch=4,
        segment_tasks_per_epoch=4,
        support_windows=3,
        segment_window=6,
        segment_query=4,
    )
    environment = TaskEnvironment(simulator_path, slate_size=3, episodes=4)
    model = MetaPolicyOptimizer(
        recommender=tiny_recommender(dm.num_items, 8, 1, 50),
        head=UserHead(),
        adapt="head",
        inner_steps=1,
        inner_lr=0.1,
        inner_loss="policy_gradient",
        environment=environment,
        curve_steps=1,
    )
    trainer = quiet_trainer(max_steps=2, default_root_dir=tmp_path, limit_val_batches=0)
    trainer.fit(model, dm)
    trainer.test(model, dm, verbose=False)
    table = pd.read_csv(tmp_path / "meta" / "meta_test.csv")
    returns = table[table.metric == "return"][["plain_before", "meta_before", "plain_adapted", "meta_adapted"]]
    assert set(table.metric) == {"ndcg@10", "return"} and len(returns) == 2 and (returns >= 0).all().all()
    assert (tmp_path / "meta" / "adaptation_curves_return.png").exists()


def test_meta_parameters_adapted_keeps_the_body_at_the_pretrained_weights():
    model = MetaPolicyOptimizer(
        recommender=tiny_recommender(),
        head=UserHead(),
        adapt="head",
        meta_parameters="adapted",
        inner_steps=1,
        inner_lr=0.5,
        meta_lr=0.05,
    )
    before = {n: p.detach().clone() for n, p in model.policy.named_parameters()}
    trainer = quiet_trainer(max_steps=2)
    trainer.fit(
        model,
        train_dataloaders=DataLoader([{"cold_start": random_tasks()}] * 2, batch_size=None, collate_fn=keep_batch),
    )
    changed = {n for n, p in model.policy.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"head.linear.weight", "head.linear.bias"}


def test_the_recipes_parse_and_interpolate(capsys, monkeypatch):
    from pathlib import Path

    from lightning_rec.cli import main

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    with pytest.raises(SystemExit):
        main(
            [
                "fit",
                "-c",
                "configs/meta-ml-latest-small.yaml",
                "-c",
                "configs/meta-env-ml-latest-small.yaml",
                "--model.init_args.checkpoint",
                "pre.ckpt",
                "--print_config",
            ]
        )
    printed = capsys.readouterr().out
    assert "lightning_rec.stages.meta_training.MetaPolicyOptimizer" in printed and "segment_by: encoder" in printed
    assert "lightning_rec.meta.task_environment.TaskEnvironment" in printed and "cold_start_users: unseen" in printed
    with pytest.raises(SystemExit):  # the policy-gradient add-on, its run folder in every path that names one
        main(
            [
                "fit",
                "-c",
                "configs/meta-ml-latest-small.yaml",
                "-c",
                "configs/meta-env-ml-latest-small.yaml",
                "-c",
                "configs/meta-pg-ml-latest-small.yaml",
                "--print_config",
            ]
        )
    printed = capsys.readouterr().out
    assert (
        "inner_loss: policy_gradient" in printed
        and "meta_parameters: adapted" in printed
        and "segment_tasks_per_epoch: 1000" in printed
    )
    assert (
        "save_dir: outputs/meta-pg-ml-latest-small" in printed
        and "dirpath: outputs/meta-pg-ml-latest-small/checkpoints" in printed
    )


def pretrained_checkpoint(groups_source, tmp_path) -> tuple[SequentialRecommender, str]:
    dm = SequenceDataModule(groups_source, max_len=12, batch_size=32, cache_dir=None)
    pretrained = SequentialRecommender(IDItemEncoder(16), TransformerEncoder(16, 1, 2, max_len=12, dropout=0.1))
    trainer = quiet_trainer(max_epochs=1, limit_val_batches=0)
    trainer.fit(pretrained, dm)
    path = str(tmp_path / "pretrained.ckpt")
    trainer.save_checkpoint(path)
    return pretrained, path


def meta_cli_args(groups_source, pretrained: str, tmp_path) -> list[str]:
    return [
        "--data=lightning_rec.meta.MetaDataModule",
        "--data.source=lightning_rec.data.sources.InteractionFile",
        f"--data.source.path={groups_source.path}",
        f"--data.source.item_path={groups_source.item_path}",
        "--data.cache_dir=null",
        "--data.max_len=12",
        "--data.num_segments=4",
        "--data.held_out_segments=1",
        "--data.train_ks=[1, 2, 3]",
        "--data.test_ks=[1, 3]",
        "--data.val_k=3",
        "--data.num_query=3",
        "--data.segment_by=encoder",
        "--model=lightning_rec.stages.meta_training.MetaPolicyOptimizer",
        f"--model.checkpoint={pretrained}",
        "--model.head=lightning_rec.meta.UserHead",
        "--trainer.max_steps=2",
        "--trainer.limit_val_batches=0",
        "--trainer.logger=false",
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
    ]


def test_the_cli_starts_meta_training_from_a_pretraining_checkpoint(groups_source, tmp_path):
    """Instantiating the stage reads no checkpoint; setup loads it, and the recommender comes back
    with its own hyperparameters and weights, not the meta stage's arguments."""
    from lightning_rec.cli import RecommenderCLI

    pretrained, path = pretrained_checkpoint(groups_source, tmp_path)
    cli = RecommenderCLI(args=meta_cli_args(groups_source, path, tmp_path), run=False)
    assert cli.model.policy is None
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.global_step == 2
    loaded = cli.model.plain.recommender  # the frozen copy of the start, as loaded
    assert loaded.hparams.eval_ks == pretrained.hparams.eval_ks
    torch.testing.assert_close(loaded.item_encoder.embedding.weight, pretrained.item_encoder.embedding.weight)


def test_an_environment_given_at_test_time_reports_returns_for_a_checkpoint_trained_without_one(
    groups_source, simulator_path, tmp_path
):
    """LightningCLI puts a checkpoint's hyperparameters back over the configuration; the environment
    is not one of them, so it comes from the test command."""
    from lightning_rec.cli import main

    _, pretrained = pretrained_checkpoint(groups_source, tmp_path)
    args = meta_cli_args(groups_source, pretrained, tmp_path)
    main(
        [
            "fit",
            *args,
            "--trainer.enable_checkpointing=true",
            "--trainer.callbacks=lightning.pytorch.callbacks.ModelCheckpoint",
            f"--trainer.callbacks.dirpath={tmp_path}",
            "--trainer.callbacks.filename=meta",
        ]
    )
    environment = [
        "--model.environment=lightning_rec.meta.task_environment.TaskEnvironment",
        f"--model.environment.checkpoint={simulator_path}",
        "--model.environment.slate_size=3",
    ]
    main(["test", *args, *environment, f"--ckpt_path={tmp_path / 'meta.ckpt'}"])
    table = pd.read_csv(tmp_path / "meta" / "meta_test.csv")
    assert "return" in set(table.metric)


# -- an environment family -------------------------------------------------------------------------
def test_a_family_plays_each_task_in_its_own_environment_and_keeps_the_tasks_order(groups_source, simulator_path):
    import dataclasses

    from lightning_rec.meta.family import EnvironmentFamily
    from lightning_rec.rl import UserBehaviour
    from lightning_rec.rl.behaviour import QuitRule

    short, long = UserBehaviour(mode="NX_X", max_steps=1), UserBehaviour(mode="NX_X", max_steps=3)
    family = EnvironmentFamily(train={"short": short}, held_out={"long": long})
    dm, environment = attached_environment(groups_source, simulator_path, episodes=4, family=family)
    segment = dm.held_out_segment_tasks()
    played = [*environment.in_held_out_environments(segment)]
    assert [tasks.name for tasks in played] == ["segment/held_out/long"] and played[0].environment.tolist() == [1]
    environment.generator.manual_seed(0)
    drawn = environment.in_training_environments(segment.apply(lambda t: t.repeat_interleave(6, 0)))
    assert set(drawn.environment.tolist()) == {0}  # the only training environment
    # tasks in environments long, short, long: one batch plays them one environment after another
    both = segment.apply(lambda t: t.repeat_interleave(3, 0))
    both = dataclasses.replace(both, environment=torch.tensor([1, 0, 1]))
    policy = AdaptivePolicy(tiny_recommender(dm.data.num_items, 8, 1, 50)).eval()
    loop = InnerLoop(policy, policy.adapted_names("all"), 1, 0.1, environment=environment)
    fast = next(loop.fast_weights(both))
    episodes = loop._episodes(fast, both, "eval", False, None)
    assert episodes.valid.sum(1).view(3, 4).tolist() == [[3] * 4, [1] * 4, [3] * 4]
    alone = loop._episodes({n: w[:1] for n, w in fast.items()}, both.apply(lambda t: t[:1]), "eval", False, None)
    assert torch.equal(episodes.slates[:4], alone.slates) and torch.equal(episodes.rewards[:4], alone.rewards)
    # the same players and dice in both environments: the first slate is the same
    assert torch.equal(episodes.slates[4:8, 0], alone.slates[:, 0])
    with pytest.raises(ValueError, match="one environment at a time"):
        environment.play("eval", both, lambda histories: None, False)
    with pytest.raises(ValueError, match="must differ between train and held_out"):
        EnvironmentFamily(train={"a": short}, held_out={"a": long})
    with pytest.raises(ValueError, match="all mask repeats or all allow them"):
        EnvironmentFamily(
            train={"a": short},
            held_out={"b": UserBehaviour(mode="FreeB", quit=QuitRule(window=2))},
        )
