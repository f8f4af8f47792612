"""Slate policies: sampling and probabilities, the top-K correction, returns and GAE, episode states,
and REINFORCE / off-policy REINFORCE / PPO fine-tuning through the real Trainer."""

from __future__ import annotations

import collections
import itertools
import re

import numpy as np
import pytest
import torch
from trainers import INTERACTIONS, quiet_trainer, run_config

from lightning_rec.data import ItemCatalog
from lightning_rec.encoders import IDItemEncoder, TransformerEncoder
from lightning_rec.rl.advantages import discounted_returns, generalized_advantages
from lightning_rec.rl.episode_states import EpisodeStates, episode_layout, states_at_slots
from lightning_rec.rl.slates import Anchor, sample_slates, slate_log_probs, topk_correction
from lightning_rec.softmax import log_probs_at
from lightning_rec.stages import SequentialRecommender


def test_slate_probabilities_of_all_ordered_slates_sum_to_one_and_match_sampling():
    torch.manual_seed(0)
    logits = torch.randn(6)
    logits[2] = float("-inf")  # masked: never drawn
    slates = torch.tensor(list(itertools.permutations(range(6), 2)))
    probs = slate_log_probs(log_probs_at(logits.expand(len(slates), -1), slates)).sum(1).exp()
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert probs[(slates == 2).any(1)].sum() == 0
    drawn, drawn_log_probs = sample_slates(logits.expand(40000, -1), 2, torch.Generator().manual_seed(0))
    assert torch.equal(drawn_log_probs, log_probs_at(logits.expand(len(drawn), -1), drawn))  # the same numbers
    assert (drawn[:, 0] != drawn[:, 1]).all() and not (drawn == 2).any()
    codes = drawn[:, 0] * 6 + drawn[:, 1]
    frequency = torch.bincount(codes, minlength=36).float() / len(drawn)
    torch.testing.assert_close(frequency[slates[:, 0] * 6 + slates[:, 1]], probs, atol=0.01, rtol=0)
    few = torch.tensor([[float("-inf"), 0.0, float("-inf"), 1.0]])  # two unmasked items for a slate of three
    few_slates = sample_slates(few, 3)[0]
    assert sorted(few_slates[0, :2].tolist()) == [1, 3] and few_slates[0, 2] == 0


def test_topk_correction_is_the_derivative_of_the_chance_to_be_in_the_slate():
    pi = torch.tensor([0.0, 0.01, 0.3, 0.9, 1.0], dtype=torch.float64, requires_grad=True)
    for k in (1, 2, 10):
        (alpha_grad,) = torch.autograd.grad((1 - (1 - pi) ** k).sum(), pi)
        torch.testing.assert_close(topk_correction(pi.detach(), k), alpha_grad)
        torch.testing.assert_close(topk_correction(pi.detach(), k), k * (1 - pi.detach()) ** (k - 1))
    assert topk_correction(torch.tensor(1.0), 10) == 0 and topk_correction(torch.tensor(0.0), 10) == 10


def masked_softmax_pair(rows: int = 5, items: int = 9):
    torch.manual_seed(0)
    blocked = torch.rand(rows, items) < 0.3
    blocked[:, 0], blocked[:, 1:5] = True, False  # padding masked; more than 3 live items each
    policy, reference = (torch.randn(rows, items).masked_fill(blocked, float("-inf")) for _ in range(2))
    return policy, reference, blocked


def test_log_probs_at_is_the_log_softmax_gathered():
    policy, _, blocked = masked_softmax_pair()
    items = torch.multinomial((~blocked).float(), 3)
    torch.testing.assert_close(log_probs_at(policy, items), torch.log_softmax(policy, -1).gather(1, items))


def test_anchor_kl_and_entropy_are_exact_on_all_items_and_the_coarse_ones_on_fewer():
    policy, reference, blocked = masked_softmax_pair()
    p, q = torch.softmax(policy, -1), torch.softmax(reference, -1)
    log_p, log_q = (x.masked_fill(blocked, 0.0) for x in (torch.log(p), torch.log(q)))
    full_kl, full_entropy = (p * (log_p - log_q)).sum(-1), -(p * log_p).sum(-1)
    everything = Anchor.of(reference, candidates=100)  # more candidates than items: masked ones at -inf
    kl, entropy = everything.kl_and_entropy(log_probs_at(policy, everything.items))
    torch.testing.assert_close(kl, full_kl, atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy, full_entropy, atol=1e-5, rtol=0)

    anchor = Anchor.of(reference, candidates=3)
    kl, entropy = anchor.kl_and_entropy(log_probs_at(policy, anchor.items))
    top = torch.zeros_like(blocked).scatter_(1, anchor.items, True)
    p_rest, q_rest = (x.masked_fill(top, 0.0).sum(-1) for x in (p, q))
    coarse_p, coarse_q = (
        torch.cat([p.gather(1, anchor.items), p_rest[:, None]], 1),
        torch.cat([q.gather(1, anchor.items), q_rest[:, None]], 1),
    )
    torch.testing.assert_close(kl, (coarse_p * (coarse_p / coarse_q).log()).sum(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy, -(coarse_p * coarse_p.log()).sum(-1), atol=1e-5, rtol=0)
    assert (kl <= full_kl + 1e-6).all() and (kl < full_kl - 1e-3).any()  # data processing: a lower bound
    assert (anchor.items.gather(1, torch.zeros_like(anchor.items[:, :1])) == q.argmax(1, keepdim=True)).all()


def test_anchor_gradients_are_finite_through_masked_items():
    policy, reference, blocked = masked_softmax_pair()
    logits = policy.masked_fill(blocked, 0.3).requires_grad_()
    anchor = Anchor.of(reference, candidates=100)  # includes masked (-inf) candidates
    kl, entropy = anchor.kl_and_entropy(log_probs_at(logits.masked_fill(blocked, float("-inf")), anchor.items))
    (kl + entropy).sum().backward()
    assert (
        torch.isfinite(logits.grad).all()
        and (logits.grad[blocked] == 0).all()
        and logits.grad[~blocked].abs().sum() > 0
    )


def test_returns_and_gae_match_their_definitions():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 9.0], [1.0, 0.0, 0.0, 0.0]])
    valid = torch.tensor([[True, True, True, False], [True, False, False, False]])
    returns = discounted_returns(rewards, valid, 0.5)
    torch.testing.assert_close(returns, torch.tensor([[1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0, 0.0], [1.0, 0, 0, 0]]))
    values = torch.tensor([[0.5, 1.0, 2.0, 7.0], [0.3, 5.0, 5.0, 5.0]])
    # lambda = 1: advantages are returns minus values; lambda = 0: one-step TD errors
    advantages, targets = generalized_advantages(rewards, values, valid, 0.5, 1.0)
    torch.testing.assert_close(advantages, (returns - values) * valid)
    torch.testing.assert_close(targets, returns)
    td, _ = generalized_advantages(rewards, values, valid, 0.5, 0.0)
    torch.testing.assert_close(
        td, torch.tensor([[1 + 0.5 * 1.0 - 0.5, 2 + 0.5 * 2.0 - 1.0, 3 - 2.0, 0], [1 - 0.3, 0, 0, 0]])
    )


def tiny_recommender(num_items: int = 30, max_len: int = 12) -> SequentialRecommender:
    torch.manual_seed(0)
    model = SequentialRecommender(IDItemEncoder(16), TransformerEncoder(16, 2, 2, max_len=max_len, dropout=0.1))
    model.build(ItemCatalog(num_items, None, torch.ones(num_items + 1)))
    return model.eval()


def test_episode_slots_fill_left_to_right_and_the_step_states_are_one_pass_over_the_final_rows():
    """The states the agent acts on (the encoder's incremental ones) are those the updates recompute."""
    model = tiny_recommender()
    history = torch.tensor([[0, 0, 0, 3, 4, 5], [1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 9]])
    layout = episode_layout(history, context_len=8, max_steps=4)
    assert layout.shape == (3, 12) and layout[0, :8].tolist() == [0, 0, 0, 0, 0, 3, 4, 5] and (layout[:, 8:] == 0).all()
    clicks = torch.tensor([[7, 0, 8, 0], [0, 0, 0, 0], [10, 11, 12, 13]])
    with torch.no_grad():
        states = EpisodeStates(model, layout, context_len=8)
        seen, slots = [], []
        for step in range(4):
            seen.append(states.hidden.clone())
            slots.append(states.slot.clone())
            states.append(clicks[:, step])
        slots = torch.stack(slots, 1)
        expected = states_at_slots(model, states.sequence, slots)
    assert states.sequence[0, 8:].tolist() == [7, 8, 0, 0] and states.sequence[2, 8:].tolist() == [10, 11, 12, 13]
    assert slots.tolist() == [[7, 8, 8, 9], [7, 7, 7, 7], [7, 8, 9, 10]]
    torch.testing.assert_close(torch.stack(seen, 1), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="slots"), torch.no_grad():
        states.append(torch.tensor([0, 0, 14]))


# -- fine-tuning in a synthetic world with a known best policy ------------------------------------------
# Items 1..30 are what users mostly consumed (80 % of the logs) but rate 1; items 31..60 rate 5.
# The simulator (hand-set) makes every low item more clickable than any high one, and a click rated
# below 3.5 costs patience. The pretrained policy recommends the popular low items; the best policy
# shows high items only.
LOW, NUM_ITEMS = 30, 60

RECOMMENDER = """class_path: lightning_rec.stages.SequentialRecommender
  init_args:
    item_encoder: {class_path: lightning_rec.encoders.IDItemEncoder, init_args: {dim: 16}}
    sequence_encoder:
      class_path: lightning_rec.encoders.TransformerEncoder
      init_args: {dim: 16, num_layers: 1, max_len: 12, dropout: 0.1}
    lr: 0.01
    warmup_steps: 1"""
SIMULATOR = """class_path: lightning_rec.stages.simulation.SimulatorTraining
  init_args: {response_model: {class_path: lightning_rec.rl.ResponseModel, init_args: {dim: 8}}}"""
FINE_TUNER = """class_path: lightning_rec.stages.fine_tuning.PolicyFineTuner
  init_args:
    pretrained: {pretrained}
    simulator: {simulator}
    algorithm: {algorithm}
    behaviour: {{class_path: lightning_rec.rl.UserBehaviour, init_args: {{max_steps: 3, initial_patience: 2.0}}}}
    slate_size: 4
    context_len: 8
    lr: {lr}
    head_lr: 0.01
    supervised_coef: {supervised_coef}"""


def write_taste_dataset(path, num_users: int = 200, length: int = 14, seed: int = 0) -> str:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    low = rng.random((num_users, length)) < 0.8
    items = np.where(
        low, rng.integers(1, LOW + 1, (num_users, length)), rng.integers(LOW + 1, NUM_ITEMS + 1, (num_users, length))
    )
    frame = pd.DataFrame(
        {
            "user": np.repeat(np.arange(num_users), length),
            "item": items.ravel(),
            "timestamp": np.tile(np.arange(length), num_users),
            "rating": np.where(low, 1.0, 5.0).ravel(),
        }
    )
    frame.to_csv(path, index=False)
    return str(path)


def run_cli(out, data, model: str, epochs: int, batch_size: int = 32) -> str:
    from lightning_rec.cli import main

    out.mkdir(parents=True, exist_ok=True)
    config = out / "config.yaml"
    config.write_text(run_config(INTERACTIONS.format(data=data, batch_size=batch_size), model, out, epochs))
    main(["fit", "-c", str(config)])
    return str(out / "last.ckpt")


def hand_set_simulator(path: str) -> None:
    """Every low item has click utility 2 and rating 1, every high item utility 0 and rating 5,
    whatever the history."""
    checkpoint = torch.load(path, weights_only=False)
    state = checkpoint["state_dict"]
    low = torch.arange(NUM_ITEMS + 1) <= LOW
    for env in (0, 1):
        prefix = f"response_models.{env}."
        for name in ("click_head", "rating_head", "user_rating_bias"):
            state[prefix + name + ".weight"].zero_()
            state[prefix + name + ".bias"].zero_()
        bias = torch.where(low, 2.0, 0.0)
        state[prefix + "click_bias.weight"][:, 0] = bias
        state[prefix + "rating_bias.weight"][:, 0] = torch.where(low, 1.0, 5.0) - state[prefix + "mean_rating"]
        state[prefix + "calibration"] = torch.tensor([1.0, float(bias[1:].logsumexp(0))])  # click logit = bias
    torch.save(checkpoint, path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    data = write_taste_dataset(root / "taste.csv")
    pretrained = run_cli(root / "pretrain", data, RECOMMENDER, epochs=15)
    simulator = run_cli(root / "simulator", data, SIMULATOR, epochs=1)
    hand_set_simulator(simulator)
    return root, data, pretrained, simulator


def greedy_return(world, checkpoint_or_agent) -> float:
    from lightning_rec.data import SequenceDataModule
    from lightning_rec.data.sources import InteractionFile
    from lightning_rec.rl import UserBehaviour
    from lightning_rec.rl.agents import RecommenderAgent
    from lightning_rec.rl.rollout import rollout
    from lightning_rec.rl.simulator_artifact import load_simulators
    from lightning_rec.stages.pretraining import load_recommender

    root, data, _, simulator = world
    dm = SequenceDataModule(InteractionFile(data, rating_col="rating"), max_len=12, cache_dir=None)
    dm.setup()
    behaviour = UserBehaviour(max_steps=3, initial_patience=2.0)
    env = load_simulators(simulator, dm.data, dm.split.train_end, behaviour, seed=1)["train"]
    agent = checkpoint_or_agent
    if isinstance(agent, str):
        agent = RecommenderAgent(load_recommender(agent).eval(), context_len=8, max_steps=3)
    episodes = rollout(env, agent, env.users.repeat(4), slate_size=4)
    return float(episodes.rewards.sum(1).mean())


def ppo(credit: str) -> str:
    settings = f"epochs: 4, minibatch_users: 64, kl_coef: 0.01, entropy_coef: 0.0, credit: {credit}"
    return f"{{class_path: lightning_rec.rl.PPO, init_args: {{{settings}}}}}"


def fine_tune_ppo(world, credit: str, supervised_coef: float = 0.0) -> str:
    root, data, pretrained, simulator = world
    model = FINE_TUNER.format(
        pretrained=pretrained, simulator=simulator, algorithm=ppo(credit), lr=0.003, supervised_coef=supervised_coef
    )
    return run_cli(root / f"ppo-{credit}-{supervised_coef}", data, model, epochs=20, batch_size=512)


@pytest.fixture(scope="module")
def ppo_checkpoint(world) -> str:
    return fine_tune_ppo(world, "slate")


@pytest.mark.parametrize("credit", ["slate", "click"])
def test_ppo_finds_the_known_best_policy(world, ppo_checkpoint, credit):
    from lightning_rec.rl.agents import PopularityAgent

    best = greedy_return(world, PopularityAgent((torch.arange(NUM_ITEMS + 1) > LOW).float()))
    before = greedy_return(world, world[2])
    after = greedy_return(world, ppo_checkpoint if credit == "slate" else fine_tune_ppo(world, credit))
    print(f"return: pretrained {before:.3f}  PPO ({credit} credit) {after:.3f}  best {best:.3f}")
    assert best > before + 0.5
    assert after > before + 0.6 * (best - before)


@pytest.mark.parametrize(
    "name, algorithm",
    [
        ("reinforce", "{class_path: lightning_rec.rl.Reinforce}"),
        ("off-policy", "{class_path: lightning_rec.rl.OffPolicyReinforce}"),
    ],
)
def test_reinforce_on_and_off_policy_improve_the_return(world, name, algorithm):
    root, data, pretrained, simulator = world
    before = greedy_return(world, pretrained)
    model = FINE_TUNER.format(
        pretrained=pretrained, simulator=simulator, algorithm=algorithm, lr=0.003, supervised_coef=0.0
    )
    after = greedy_return(world, run_cli(root / name, data, model, epochs=20, batch_size=512))
    print(f"return: pretrained {before:.3f}  {name} {after:.3f}")
    assert after > before + 0.3


@pytest.mark.parametrize("credit", ["slate", "click"])
def test_ppo_update_in_chunks_of_users_gives_the_whole_minibatchs_gradients(world, credit):
    from lightning_rec.data import SequenceDataModule
    from lightning_rec.data.sources import InteractionFile
    from lightning_rec.rl import PPO, UserBehaviour
    from lightning_rec.rl.algorithm import PolicyContext
    from lightning_rec.rl.simulator_artifact import load_simulators
    from lightning_rec.stages.fine_tuning import PolicyFineTuner

    _, data, pretrained, simulator = world
    dm = SequenceDataModule(InteractionFile(data, rating_col="rating"), max_len=12, cache_dir=None)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    gradients = {}
    for max_logits in (10**9, 1):  # 1: every user of a minibatch is its own chunk
        torch.manual_seed(0)
        behaviour = UserBehaviour(max_steps=3, initial_patience=2.0)
        algorithm = PPO(
            epochs=1, minibatch_users=1000, kl_coef=0.1, entropy_coef=0.01, credit=credit, max_logits=max_logits
        )
        tuner = PolicyFineTuner(pretrained, simulator, algorithm, behaviour, slate_size=4, context_len=8)
        tuner.setup("fit")
        tuner.train_simulator = load_simulators(simulator, dm.data, dm.split.train_end, behaviour)["train"]
        tuner.generator = torch.Generator().manual_seed(0)
        tuner.eval()
        assert isinstance(tuner, PolicyContext)  # the stage offers what the algorithm contract names
        steps, logs = [], collections.Counter()
        for gradient in algorithm.update(tuner, batch):
            gradient.loss.backward()
            logs.update(gradient.logs)  # a Counter: the sums the stage logs
            if gradient.step:
                steps.append({name: p.grad.clone() for name, p in tuner.named_parameters() if p.grad is not None})
        gradients[max_logits] = steps
    whole, chunked = gradients[10**9], gradients[1]
    assert len(whole) == len(chunked) == 1 and len(whole[0]) > 10  # one optimiser step, most weights reached
    for name, gradient in whole[0].items():
        torch.testing.assert_close(chunked[0][name], gradient, rtol=1e-4, atol=1e-7)
    assert logs["kl"] >= 0 and 0 <= logs["clipped_share"] <= 1


def test_session_head_steers_the_sampled_slates_exactly_as_the_updates_recompute_them(world):
    from lightning_rec.data import SequenceDataModule
    from lightning_rec.data.sources import InteractionFile
    from lightning_rec.rl import PPO, UserBehaviour
    from lightning_rec.rl.session_head import CategoryRecency
    from lightning_rec.rl.simulator_artifact import load_simulators
    from lightning_rec.softmax import log_probs_at
    from lightning_rec.stages.fine_tuning import PolicyFineTuner

    _, data, pretrained, simulator = world
    dm = SequenceDataModule(InteractionFile(data, rating_col="rating"), max_len=12, cache_dir=None)
    dm.setup()
    behaviour = UserBehaviour(max_steps=4, initial_patience=4.0)
    head = CategoryRecency(windows=[1, 2])
    tuner = PolicyFineTuner(pretrained, simulator, PPO(), behaviour, slate_size=4, context_len=8, session_head=head)
    tuner.setup("fit")
    tuner.train_simulator = load_simulators(simulator, dm.data, dm.split.train_end, behaviour)["train"]
    tuner.generator = torch.Generator().manual_seed(0)
    tuner.categories = torch.arange(NUM_ITEMS + 1) % 4 + 1
    tuner.eval()
    batch = next(iter(dm.train_dataloader()))
    with torch.no_grad():
        plain, _ = tuner.play(batch)
        head.weights.copy_(torch.tensor([-30.0, -30.0]))  # never the category of the last two clicks
        tuner.generator = torch.Generator().manual_seed(0)
        steered, _ = tuner.play(batch)
        rows = torch.arange(len(steered.valid))
        logits = tuner.episode_logits(steered, rows)[1]
    valid = steered.valid.unsqueeze(-1) & (steered.slates != 0)
    recomputed = log_probs_at(logits, steered.slates)
    torch.testing.assert_close(recomputed[valid], steered.log_probs[valid], atol=1e-4, rtol=1e-4)

    def repeats(episodes) -> float:
        """Share of live slates that show a category of the user's last two clicks (by hand)."""
        hits, live = 0, 0
        for user in range(len(episodes.valid)):
            clicked = []
            for step in torch.nonzero(episodes.valid[user]).squeeze(1).tolist():
                recent = {int(tuner.categories[item]) for item in clicked[-2:]}
                hits += any(int(tuner.categories[item]) in recent for item in episodes.slates[user, step])
                live += 1
                if episodes.clicked[user, step]:
                    clicked.append(int(episodes.clicked[user, step]))
        return hits / live

    assert repeats(plain) > 0.3 and repeats(steered) == 0.0


def test_ppo_learns_the_session_head_from_reward_where_users_quit_on_repeated_categories(world):
    """Under a quit rule (leave after clicking a category among the last 2 clicks) that nobody tells
    the policy, PPO drives the head's weights on the recent windows negative, and they earn more."""
    from lightning_rec.cli import main
    from lightning_rec.data import SequenceDataModule
    from lightning_rec.data.sources import InteractionFile
    from lightning_rec.rl import QuitRule, UserBehaviour
    from lightning_rec.rl.agents import RecommenderAgent
    from lightning_rec.rl.rollout import rollout
    from lightning_rec.rl.simulator_artifact import load_simulators
    from lightning_rec.stages.fine_tuning import trained_session
    from lightning_rec.stages.pretraining import load_recommender

    root, data, pretrained, simulator = world
    out = root / "ppo-head"
    out.mkdir()
    quit_rule = "{class_path: lightning_rec.rl.UserBehaviour, init_args: {mode: NX_0, max_steps: 4, quit: {window: 2}}}"
    model = FINE_TUNER.format(
        pretrained=pretrained, simulator=simulator, algorithm=ppo("click"), lr=0.0, supervised_coef=0.0
    )  # lr 0: the recommender stays as pretrained, only the heads learn
    model = re.sub(r"    behaviour: .*", f"    behaviour: {quit_rule}", model)
    head = "{class_path: lightning_rec.rl.CategoryRecency, init_args: {windows: [1, 2, 4], lr: 0.1}}"
    model += f"\n    session_head: {head}"
    config = out / "config.yaml"
    recipe = run_config(INTERACTIONS.format(data=data, batch_size=512), model, out, 10)
    config.write_text(with_categories(recipe, data))
    main(["fit", "-c", str(config)])
    session = trained_session(str(out / "last.ckpt"))
    weights = session["head"].weights.detach()
    dm = SequenceDataModule(InteractionFile(data, rating_col="rating"), max_len=12, cache_dir=None)
    dm.setup()
    categories = torch.arange(NUM_ITEMS + 1) % 4 + 1
    categories[0] = 0
    behaviour = UserBehaviour(mode="NX_0", max_steps=4, quit=QuitRule(window=2))
    env = load_simulators(simulator, dm.data, dm.split.train_end, behaviour, seed=1, categories=categories)["eval"]
    recommender = load_recommender(pretrained).eval()

    def greedy(head) -> float:
        env.seed(0)
        agent = RecommenderAgent(recommender, 8, 4, head=head, categories=categories)
        return float(rollout(env, agent, env.users.repeat(4), slate_size=4).rewards.sum(1).mean())

    learned, before = greedy(session["head"]), greedy(None)
    print(f"head weights {weights.tolist()}; greedy return in the eval environment {before:.3f} -> {learned:.3f}")
    assert (weights[:2] < -0.3).all()
    assert learned > 1.3 * before


def logged_loss(world, checkpoint: str) -> float:
    """The pretraining loss of a checkpoint's recommender on all logged training windows."""
    from lightning_rec.data import SequenceDataModule
    from lightning_rec.data.sources import InteractionFile
    from lightning_rec.stages.pretraining import load_recommender

    dm = SequenceDataModule(InteractionFile(world[1], rating_col="rating"), max_len=12, cache_dir=None)
    dm.setup()
    dataset = dm.train_dataloader().dataset
    batch = dataset.__getitems__(list(range(len(dataset))))
    with torch.no_grad():
        return float(load_recommender(checkpoint).eval().pretraining_loss(batch["input"], batch["target"]))


def test_supervised_term_keeps_the_logged_next_items_likely_while_ppo_improves(world, ppo_checkpoint):
    # the logs are 80 % low items, the best policy shows high ones: RL alone unlearns the logs
    supervised = fine_tune_ppo(world, "slate", supervised_coef=0.2)
    pretrained, plain_ppo = logged_loss(world, world[2]), logged_loss(world, ppo_checkpoint)
    held, before, after = (
        logged_loss(world, supervised),
        greedy_return(world, world[2]),
        greedy_return(world, supervised),
    )
    print(
        f"logged loss: pretrained {pretrained:.3f}  PPO {plain_ppo:.3f}  PPO + supervised {held:.3f}; "
        f"return {before:.3f} -> {after:.3f}"
    )
    assert plain_ppo > pretrained + 0.5
    assert held < pretrained + 0.25 * (plain_ppo - pretrained)
    assert after > before + 0.3


def test_policy_checks_its_state_fits_the_encoder(world):
    from lightning_rec.data import SequenceDataModule
    from lightning_rec.data.sources import InteractionFile
    from lightning_rec.rl import PPO, UserBehaviour
    from lightning_rec.stages.fine_tuning import PolicyFineTuner

    _, data, pretrained, simulator = world
    tuner = PolicyFineTuner(pretrained, simulator, PPO(), UserBehaviour(max_steps=10), context_len=8)
    assert tuner.recommender is None  # instantiating reads no checkpoint
    dm = SequenceDataModule(InteractionFile(data, rating_col="rating"), max_len=12, cache_dir=None)
    with pytest.raises(ValueError, match="exceeds the pretrained encoder's max_len"):
        quiet_trainer(max_epochs=1).fit(tuner, dm)


EVALUATION = """class_path: lightning_rec.stages.policy_evaluation.PolicyEvaluation
  init_args:
    simulator: {simulator}
    supervised: {pretrained}
    policies: {{ppo: {ppo}}}
    behaviour:
      class_path: lightning_rec.rl.UserBehaviour
      init_args: {{mode: NX_0, max_steps: 3, quit: {{window: 2, threshold: 0}}}}
    modes: [FreeB, NX_0, NX_X]
    episodes_per_user: 2  # slate_size and context_len: as PPO was trained (slates of 4, 8 events)
    spread_penalties: [0.0, 1.0, 100.0]
    output_dir: {out}"""


def with_categories(config: str, data: str) -> str:
    """The data block of `config` with an item file whose `genre` (item % 4 + 1) is the category."""
    import pandas as pd

    items = data.replace(".csv", "_items.csv")
    pd.DataFrame({"item": range(1, NUM_ITEMS + 1), "genre": np.arange(1, NUM_ITEMS + 1) % 4 + 1}).to_csv(
        items, index=False
    )
    source = f"path: {data}, rating_col: rating"
    return config.replace(source, f"{source}, item_path: {items}").replace(
        "    max_len: 12\n", "    max_len: 12\n    category: {column: genre}\n"
    )


def test_evaluation_table_ranks_the_policies_per_mode_and_writes_its_files(world, ppo_checkpoint, capsys, monkeypatch):
    import pandas as pd

    import lightning_rec.stages.policy_evaluation as evaluation
    from lightning_rec.cli import main
    from lightning_rec.rl.simulator_artifact import simulated_users

    tuned, real_tune = [], evaluation.tune  # (the tuning environment's users, the choice, each penalty's R_tra)

    def spy(candidates, env, users, slate_size, seed):
        choice, returns = real_tune(candidates, env, users, slate_size, seed)
        tuned.append((env.users.cpu(), choice, returns))
        return choice, returns

    monkeypatch.setattr(evaluation, "tune", spy)
    root, data, pretrained, simulator = world
    out = root / "evaluation"
    out.mkdir()
    config = out / "config.yaml"
    model = EVALUATION.format(simulator=simulator, pretrained=pretrained, ppo=ppo_checkpoint, out=out)
    config.write_text(with_categories(run_config(INTERACTIONS.format(data=data, batch_size=32), model, out, 1), data))
    main(["test", "-c", str(config)])
    table = pd.read_csv(out / "table.csv")
    assert list(table.columns[:8]) == [
        "mode",
        "policy",
        "setting",
        "R_tra",
        "len_tra",
        "reward_per_turn",
        "ctr",
        "coverage",
    ]
    assert {"test_recall@10", "test_ndcg@10", "R_tra_vs_supervised_se", "test_ndcg@10_vs_supervised_se"} <= set(
        table.columns
    )
    baselines = ["random", "popularity", "supervised", "epsilon-greedy", "category-spread", "ppo"]
    blocks = {mode: block.set_index("policy") for mode, block in table.groupby("mode", sort=False)}
    assert list(blocks) == ["FreeB", "NX_0", "NX_X"]
    assert list(blocks["NX_0"].index) == list(blocks["FreeB"].index) == [*baselines, "quit-oracle"]
    assert list(blocks["NX_X"].index) == baselines  # no quit rule, no oracle
    # the penalty is tuned once per mode, in the train environment only, and the table names the choice
    train_users = simulated_users(simulator)["train"]
    assert len(tuned) == 3 and all(torch.equal(users.sort().values, train_users.sort().values) for users, _, _ in tuned)
    for (_, choice, returns), block in zip(tuned, blocks.values()):
        assert choice == max(returns, key=returns.get)
        assert block.loc["category-spread", "setting"] == f"penalty={choice:g} (tuned in train)"
    assert "chosen" in capsys.readouterr().out
    np.testing.assert_allclose(table["R_tra"], table["reward_per_turn"] * table["len_tra"], rtol=1e-5)
    assert ((table["ctr"] >= 0) & (table["ctr"] <= 1) & (table["len_tra"] <= 3)).all()
    assert (blocks["NX_X"]["len_tra"] == 3).all()  # exactly X turns
    for mode in ("FreeB", "NX_0"):  # told the rule, the oracle never lets anyone quit in 3 turns
        assert blocks[mode].loc["quit-oracle", "len_tra"] == 3 > blocks[mode].loc["supervised", "len_tra"]
    nx_0 = blocks["NX_0"]
    assert nx_0.loc["ppo", "R_tra"] > nx_0.loc["supervised", "R_tra"] + 0.5
    assert nx_0.loc["popularity", "coverage"] < nx_0.loc["random", "coverage"]
    # ratios to the supervised policy: of the block's own means, with paired standard errors; the
    # re-rankers rank no catalogue, so they have no offline columns
    for metric in ("R_tra", "test_ndcg@10"):
        ranked = nx_0[f"{metric}_vs_supervised"].dropna()
        np.testing.assert_allclose(ranked, nx_0.loc[ranked.index, metric] / nx_0.loc["supervised", metric], rtol=1e-4)
        assert ranked["supervised"] == 1.0 and nx_0.loc["supervised", f"{metric}_vs_supervised_se"] == 0.0
        assert (nx_0[f"{metric}_vs_supervised_se"].drop("supervised").dropna() > 0).all()
    assert nx_0.loc[["epsilon-greedy", "category-spread", "quit-oracle"], "test_ndcg@10"].isna().all()
    assert (out / "reward_curves.png").stat().st_size > 0 and "| NX_0 | ppo |" in (out / "table.md").read_text()


def test_the_field_units_and_curves_of_hand_made_episodes():
    from lightning_rec.rl.rollout import Episodes
    from lightning_rec.rl.tables import online_metrics, reward_curve

    # user 0 plays 3 turns, clicks at turns 1 (reward 1) and 3 (0.5); user 1 leaves after an ignored
    # slate; user 2 clicks at turn 1 (reward 1) and ignores turn 2; items 1-5 of 10 are shown
    slates = torch.tensor([[[1, 2], [3, 4], [1, 5]], [[2, 3], [0, 0], [0, 0]], [[1, 2], [2, 3], [0, 0]]])
    clicks = torch.zeros(3, 3, 2, dtype=torch.bool)
    clicks[0, 0, 0] = clicks[0, 2, 1] = clicks[2, 0, 1] = True
    rewards = torch.tensor([[1.0, 0.0, 0.5], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    valid = torch.tensor([[True, True, True], [True, False, False], [True, True, False]])
    episodes = Episodes(slates, clicks, rewards, valid, consumed=torch.zeros(3, 11, dtype=torch.bool))
    assert online_metrics(episodes, num_items=10) == pytest.approx(
        {"R_tra": 2.5 / 3, "len_tra": 2.0, "reward_per_turn": 2.5 / 6, "ctr": 3 / 6, "coverage": 0.5}
    )
    reward_by_turn, survival = reward_curve(episodes, max_steps=4)
    assert survival == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])
    assert reward_by_turn == pytest.approx([2 / 3, 0.0, 0.5 / 3, 0.0]) and sum(reward_by_turn) == pytest.approx(2.5 / 3)


def test_evaluation_plays_the_session_its_policies_were_trained_under(tmp_path):
    from lightning_rec.rl import UserBehaviour
    from lightning_rec.stages.fine_tuning import trained_session
    from lightning_rec.stages.policy_evaluation import agreed_session

    def policy(name: str, **session) -> dict | None:
        path = tmp_path / f"{name}.ckpt"
        torch.save({"state_dict": {}, "session": session}, path)
        return trained_session(str(path))

    short, long = UserBehaviour(max_steps=3), UserBehaviour(max_steps=9)
    a = policy("a", behaviour=short, slate_size=4, context_len=8)
    b = policy("b", behaviour=UserBehaviour(max_steps=3), slate_size=4, context_len=8)
    unset = dict.fromkeys(("behaviour", "slate_size", "context_len"))
    settings = agreed_session({"a": a, "b": b}, unset)
    assert settings["behaviour"].max_steps == 3 and (settings["slate_size"], settings["context_len"]) == (4, 8)
    assert agreed_session({}, unset) == {"behaviour": None, "slate_size": 10, "context_len": 30}
    c = policy("c", behaviour=long, slate_size=4, context_len=8)
    with pytest.raises(ValueError, match="trained under different behaviour"):
        agreed_session({"a": a, "c": c}, unset)
    given = agreed_session({"a": a, "c": c}, {**unset, "behaviour": long, "slate_size": 5})
    assert given["behaviour"] is long and (given["slate_size"], given["context_len"]) == (5, 8)


def test_paired_ratio_and_its_standard_error():
    from lightning_rec.rl.tables import paired_ratio

    base = torch.tensor([1.0, 2.0, 3.0, 6.0])
    assert paired_ratio(base + 1.0, base) == (pytest.approx(4 / 3), 0.0)  # a constant gain has no noise
    values = torch.tensor([2.0, 2.0, 5.0, 7.0])  # differences 1, 0, 2, 1: mean 1, sd sqrt(2/3)
    ratio, se = paired_ratio(values, base)
    assert ratio == pytest.approx(16 / 12) and se == pytest.approx((2 / 3) ** 0.5 / 2 / 3)


def test_fast_logsumexp_matches_torch_on_wide_logits_and_masks():
    from lightning_rec.softmax import logsumexp

    torch.manual_seed(0)
    logits = (torch.randn(6, 500) * 60).masked_fill(torch.rand(6, 500) < 0.2, float("-inf"))  # most terms underflow
    logits[5] = float("-inf")  # a fully masked row stays -inf, not NaN
    logits.requires_grad_()
    fast, exact = logsumexp(logits).squeeze(-1), torch.logsumexp(logits, -1)
    torch.testing.assert_close(fast[:5], exact[:5])
    assert fast[5] == float("-inf") and not torch.isnan(fast).any()
    (gradient,) = torch.autograd.grad(fast[:5].sum(), logits)
    torch.testing.assert_close(gradient[:5], torch.softmax(logits[:5].detach(), -1), atol=1e-6, rtol=0)
