"""The user simulator: logged windows, response model training and calibration, environment invariants."""

from __future__ import annotations

import dataclasses

import lightning as L
import numpy as np
import pytest
import torch
from trainers import quiet_trainer

from lightning_rec.data import SequenceDataModule
from lightning_rec.rl import ResponseModel, UserBehaviour
from lightning_rec.rl.calibration import expected_calibration_error, fit_platt
from lightning_rec.rl.simulator_artifact import load_simulators
from lightning_rec.stages.simulation import SimulatorTraining, eval_events, split_users


def fit_simulator(
    source, tmp_path, epochs: int = 40, partition: str = "users"
) -> tuple[SimulatorTraining, SequenceDataModule, str]:
    dm = SequenceDataModule(source, max_len=8, batch_size=32, cache_dir=None)
    L.seed_everything(0)
    response_model = ResponseModel(dim=16, dropout=0.0, init_std=0.5)
    module = SimulatorTraining(response_model, partition=partition, num_negatives=20, calibration_negatives=10, lr=1e-2)
    trainer = quiet_trainer(max_epochs=epochs, default_root_dir=tmp_path, check_val_every_n_epoch=10)
    trainer.fit(module, dm)
    path = str(tmp_path / "simulator.ckpt")
    trainer.save_checkpoint(path)
    return module, dm, path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, chain_csv):
    from lightning_rec.data.sources import InteractionFile

    source = InteractionFile(chain_csv, rating_col="rating")
    module, dm, path = fit_simulator(source, tmp_path_factory.mktemp("sim"))
    return module, dm, path


def test_training_batches_carry_their_users_positions_and_ratings(fitted):
    _, dm, _ = fitted
    batch = dm.train_dataloader().dataset.__getitems__(list(range(len(dm.train_dataloader().dataset))))
    # each target is the event at its position in its user's sequence, with that event's rating
    real = batch["target"] != 0
    user = batch["user"].unsqueeze(1).expand_as(real)[real]
    flat = dm.data.offsets[user] + batch["position"][real]
    assert torch.equal(batch["target"][real], dm.data.items[flat])
    assert torch.equal(batch["rating"][real], dm.data.ratings[flat])
    assert (batch["position"][~real] == -1).all() and (batch["rating"][~real] == 0).all()


def test_users_are_split_into_two_disjoint_reproducible_halves():
    env = split_users(100, 0.3, seed=4)
    assert env.sum() == 30 and torch.equal(env, split_users(100, 0.3, seed=4))
    assert not torch.equal(env, split_users(100, 0.3, seed=5))
    with pytest.raises(ValueError, match="eval_fraction"):
        SimulatorTraining(eval_fraction=1.0)
    with pytest.raises(ValueError, match="partition must be one of"):
        SimulatorTraining(partition="items")


def test_events_are_dealt_evenly_along_each_history():
    phase = torch.rand(50, 1, generator=torch.Generator().manual_seed(0))
    dealt = eval_events(phase, torch.arange(200).expand(50, 200), 0.3)
    # every stretch of 20 events gives the evaluation environment 6 of them, give or take one
    per_stretch = dealt.reshape(50, 10, 20).sum(-1)
    assert per_stretch.min() >= 5 and per_stretch.max() <= 7
    assert not torch.equal(dealt[0], dealt[1])  # users have their own phase


def test_event_partition_trains_each_model_on_its_own_events_of_every_user(tmp_path, chain_csv):
    from lightning_rec.data.sources import InteractionFile

    module, dm, _ = fit_simulator(
        InteractionFile(chain_csv, rating_col="rating"), tmp_path, epochs=10, partition="events"
    )
    everyone = torch.arange(dm.data.num_users)
    assert torch.equal(module.users_of("train"), everyone) and torch.equal(module.users_of("eval"), everyone)
    dataset = dm.train_dataloader().dataset
    batch = dataset.__getitems__(list(range(len(dataset))))
    env = module.target_roles(batch)
    # the role of a target is that of its event (user, position), whichever window holds it
    user, position = batch["user"].unsqueeze(1).expand_as(env), batch["position"]
    real = batch["target"] != 0
    events = {}
    for u, p, e in zip(user[real].tolist(), position[real].tolist(), env[real].tolist()):
        assert events.setdefault((u, p), e) == e
    assert 0.35 < env[real].float().mean() < 0.65
    # each model's loss reads only its own targets: changing the other role's targets leaves it
    model = module.response_model("train")
    torch.manual_seed(0)
    before = module._losses(model, batch, (env == 0) & real)
    changed = dict(
        batch, target=torch.where(env == 1, torch.randint(1, dm.data.num_items + 1, env.shape), batch["target"])
    )
    torch.manual_seed(0)
    after = module._losses(model, changed, (env == 0) & real)
    torch.testing.assert_close(before, after)


def test_simulator_learns_the_chain_and_calibrates(fitted):
    module, _, _ = fitted
    metrics = module.trainer.callback_metrics
    assert metrics["val/train/auc"] > 0.9 and metrics["val/eval/auc"] > 0.9
    for env in ("train", "eval"):
        assert 0 <= metrics[f"val/{env}/ece"] < 0.1
        assert metrics[f"val/{env}/rating_rmse"] < 2.5
    # the two environments are different models: disjoint users, different initial weights
    train, evaluate = module.response_model("train"), module.response_model("eval")
    assert not torch.equal(train.items.weight, evaluate.items.weight)
    assert set(module.users_of("train").tolist()).isdisjoint(module.users_of("eval").tolist())


def test_ece_and_platt_scaling():
    probs = torch.tensor([0.1, 0.1, 0.9, 0.9])
    assert expected_calibration_error(probs, torch.tensor([0.0, 0.0, 1.0, 1.0]), bins=10) == pytest.approx(0.1)
    assert expected_calibration_error(probs, torch.tensor([1.0, 1.0, 0.0, 0.0]), bins=10) == pytest.approx(0.9)
    torch.manual_seed(0)
    logits = torch.randn(20000) * 2
    labels = torch.bernoulli(torch.sigmoid(0.5 * logits - 1.0))
    scale, shift = fit_platt(logits, labels)
    assert scale == pytest.approx(0.5, abs=0.05) and shift == pytest.approx(-1.0, abs=0.05)


def environment(fitted, role: str = "train", **behaviour):
    module, dm, path = fitted
    return load_simulators(path, dm.data, dm.split.train_end, UserBehaviour(**behaviour), seed=0)[role], dm


def test_the_checkpoint_loads_as_the_trained_simulators_without_the_training_stage(fitted):
    module, dm, path = fitted
    state = torch.get_rng_state()
    simulators = load_simulators(path, dm.data, dm.split.train_end, UserBehaviour())
    assert torch.equal(torch.get_rng_state(), state)  # loading draws no random numbers
    assert list(simulators) == ["train", "eval"]
    for role, simulator in simulators.items():
        assert torch.equal(simulator.users, module.users_of(role))
        trained = module.response_model(role).state_dict()
        assert simulator.model.state_dict().keys() == trained.keys()
        for name, value in simulator.model.state_dict().items():
            torch.testing.assert_close(value, trained[name])
    assert not torch.equal(simulators["train"].users, simulators["eval"].users)
    with pytest.raises(ValueError, match="role must be one of"):
        module.response_model("test")
    other = dataclasses.replace(dm.data, item_ids=[*dm.data.item_ids, "one more"])
    with pytest.raises(ValueError, match="use the same data configuration"):
        load_simulators(path, other, dm.split.train_end, UserBehaviour())


def test_reset_starts_from_the_logged_history(fitted):
    env, dm = environment(fitted)
    users = env.users[:5]
    positions = torch.tensor([2, 3, 4, 5, 6])
    state = env.reset(users, positions)
    for row, (user, position) in enumerate(zip(users.tolist(), positions.tolist())):
        logged = dm.data.user_history(user)[:position]
        assert set(torch.nonzero(state.consumed[row]).squeeze(1).tolist()) == set(logged.tolist())
        assert state.history[row, -position:].tolist() == logged[-8:].tolist()[-position:]
    default = env.reset(users)
    assert default.consumed.sum(1).tolist() == [
        len(set(dm.data.user_history(u)[: dm.split.train_end[u]].tolist())) for u in users.tolist()
    ]
    other = fitted[0].users_of("eval")[:1]
    with pytest.raises(ValueError, match="not simulated by this environment"):
        env.reset(other)


def test_click_probabilities_are_probabilities(fitted):
    env, dm = environment(fitted)
    state = env.reset(env.users)
    slates = torch.randint(0, dm.data.num_items + 1, (len(env.users), 5))
    probs = env.click_probabilities(slates)
    assert ((probs >= 0) & (probs <= 1)).all()
    torch.testing.assert_close(probs.sum(1), torch.ones(len(env.users)))
    alone = env.model.click_probability(state.response, slates)
    assert ((alone >= 0) & (alone <= 1)).all()
    # one new item alone is clicked with exactly its calibrated click probability
    fresh = (~state.consumed[:, 1:]).float().argmax(1, keepdim=True) + 1
    torch.testing.assert_close(
        env.click_probabilities(fresh)[:, 0], env.model.click_probability(state.response, fresh)[:, 0]
    )


def test_keyed_dice_follow_the_click_probabilities_and_depend_on_the_episode_alone(fitted):
    """Keyed clicks (`reset(..., dice=keys)`) invert each row's CDF at keyed_uniform(seed, key, step):
    their frequencies are the choice probabilities, and an episode's clicks stay the same whatever
    other episodes share its batch."""
    env, _ = environment(fitted)
    user = env.users[:1].expand(20_000)
    state = env.reset(user)
    successor = state.history[:, -1:] % env.num_items + 1
    slate = torch.cat([successor, successor % env.num_items + 1], 1)
    # the chain's successor (and the item after it) against a no-click as likely: dice decide
    env, _ = environment(fitted, no_click_utility=env._utilities(slate)[0][0].max().item())
    env.seed(3)
    state = env.reset(user, dice=torch.arange(len(user)))
    probs = env.click_probabilities(slate)[0]
    assert 0.2 < probs[-1] < 0.8
    clicks, _, _ = env.step(slate)
    shares = torch.cat([clicks.float().mean(0), (~clicks.any(1)).float().mean(0, keepdim=True)])
    torch.testing.assert_close(shares, probs, atol=0.015, rtol=0)
    assert state.dice is not None

    env.seed(3)
    env.reset(user[:500], dice=torch.arange(1000, 1500))
    assert torch.equal(env.step(slate[:500])[0], clicks[1000:1500])  # the same keys alone: the same clicks
    with pytest.raises(ValueError, match="one key per episode"):
        env.reset(user[:5], dice=torch.arange(3))


def test_the_chain_successor_is_clicked_far_more_than_a_random_item(fitted):
    env, dm = environment(fitted)
    state = env.reset(env.users)
    last = state.history[:, -1]
    successor = last % dm.data.num_items + 1
    far = (last + dm.data.num_items // 2 - 1) % dm.data.num_items + 1
    probs = env.model.click_probability(state.response, torch.stack([successor, far], 1))
    assert probs[:, 0].mean() > 0.5 > 0.1 > probs[:, 1].mean()


def test_ignored_slates_end_the_episode_and_nothing_happens_after(fitted):
    env, _ = environment(fitted, initial_patience=2.0, ignore_cost=1.0, max_steps=50)
    state = env.reset(env.users)
    empty = torch.zeros(len(env.users), 4, dtype=torch.long)
    env.step(empty)
    assert not state.done.any()
    clicks, rewards, done = env.step(empty)
    assert done.all() and state.left.all() and not clicks.any() and (rewards == 0).all()
    # a finished user can be shown anything: no click, no reward, nothing consumed, still done
    consumed = state.consumed.clone()
    clicks, rewards, done = env.step(torch.randint(1, env.num_items + 1, (len(env.users), 4)))
    assert done.all() and not clicks.any() and (rewards == 0).all() and torch.equal(state.consumed, consumed)


def test_forbid_mode_repeats_earn_nothing_and_cost_patience_allow_mode_clicks_them(fitted):
    env, _ = environment(
        fitted, repeats="forbid", initial_patience=100.0, ignore_cost=1.0, repeat_cost=0.5, max_steps=50
    )
    state = env.reset(env.users)
    consumed = state.history[:, -3:]  # three items each user has consumed
    for _ in range(5):
        clicks, rewards, _ = env.step(consumed)
        assert not clicks.any() and (rewards == 0).all()
    torch.testing.assert_close(state.patience, torch.full_like(state.patience, 100.0 - 5 * (1.0 + 3 * 0.5)))
    duplicates = torch.stack([state.history[:, -1]] * 2, 1)  # any item twice in one slate is a repeat too
    assert env._utilities(duplicates)[2].all()
    # the chain successor is clicked by most users; shown again it is a repeat
    for mode in ("forbid", "allow"):
        env, dm = environment(fitted, repeats=mode, initial_patience=100.0, max_steps=50)
        state = env.reset(env.users)
        successor = state.history[:, -1:] % dm.data.num_items + 1
        env.step(successor)
        repeated = state.consumed.gather(1, successor).squeeze(1)
        assert repeated.float().mean() > 0.5
        probability = env.click_probabilities(successor)[repeated, 0]
        alone = env.model.click_probability(state.response, successor)[repeated, 0]
        if mode == "forbid":
            clicks, rewards, _ = env.step(successor)
            assert (probability == 0).all() and not clicks[repeated].any() and (rewards[repeated] == 0).all()
            assert not env._utilities(successor)[1][repeated].any()
        else:  # an ordinary item: clicked as often as the response model says
            torch.testing.assert_close(probability, alone)
            assert env._utilities(successor)[1][repeated].all()


def test_clicks_are_consumed_rewarded_by_rating_and_sessions_end_at_max_steps(fitted):
    env, dm = environment(fitted, initial_patience=100.0, max_steps=3, satisfied_rating=0.0)
    state = env.reset(env.users)
    for step in range(3):
        slates = (state.history[:, -1:] + torch.arange(3)) % dm.data.num_items + 1  # the successor first
        clicks, rewards, done = env.step(slates)
        assert (clicks.sum(1) <= 1).all() and clicks.any()
        item = (slates * clicks).sum(1)
        clicked = item > 0
        assert state.consumed[clicked, item[clicked]].all() and torch.equal(state.history[clicked, -1], item[clicked])
        assert ((rewards > 0) <= clicked).all() and (rewards <= 1).all()
        assert done.all() == (step == 2)
    assert not state.left.any()


def test_bad_slates_are_clear_errors(fitted):
    env, _ = environment(fitted)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(torch.zeros(1, 2, dtype=torch.long))
    env.reset(env.users[:2])
    with pytest.raises(ValueError, match="LongTensor"):
        env.step(torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="item"):
        env.step(torch.full((2, 2), env.num_items + 1))


def test_gym_wrapper_passes_the_gymnasium_checker_and_plays_an_episode(fitted):
    from gymnasium.utils.env_checker import check_env

    from lightning_rec.rl.gym_env import SimulatedUserEnv

    env, _ = environment(fitted, max_steps=5, initial_patience=2.0)
    gym_env = SimulatedUserEnv(env, slate_size=3)
    check_env(gym_env, skip_render_check=True)
    user = int(env.users[0])
    observation, info = gym_env.reset(seed=0, options={"user": user})
    assert info["user"] == user and gym_env.observation_space.contains(observation)
    steps, over = 0, False
    while not over:
        observation, reward, terminated, truncated, info = gym_env.step(np.zeros(3, dtype=np.int64))
        steps, over = steps + 1, terminated or truncated
        assert reward == 0 and not info["clicks"].any()
    assert terminated and steps == 2  # two ignored slates use up a patience of 2


def test_catalogue_ratings_equal_the_ratings_of_every_item(fitted):
    module, dm, _ = fitted
    model = module.response_model("eval").eval()
    state = model.encode(torch.randint(0, dm.data.num_items + 1, (3, 6)))[:, -1]
    every_item = torch.arange(dm.data.num_items + 1).expand(3, -1)
    torch.testing.assert_close(model.rating(state), model.rating(state, every_item))
