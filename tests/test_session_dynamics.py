"""Session dynamics of the simulated user (patience, the field's quit rule, temper, FreeB / NX_0 / NX_X)
against hand-computed episodes: every click probability is fixed by the calibration (scale 0), and
a very low no-click utility makes a one-item slate a sure click."""

from __future__ import annotations

import inspect

import jsonargparse
import pandas as pd
import pytest
import torch

from lightning_rec.data.preprocess import SequenceData
from lightning_rec.rl import ResponseModel, UserBehaviour, UserSimulator
from lightning_rec.rl.behaviour import QuitRule, Temper, remember

pytestmark = pytest.mark.usefixtures("one_thread")

# items 1-3: category 1, 4-6: category 2, 7-8: category 3, 9: none; every user has logged item 9
CATEGORIES = torch.tensor([0, 1, 1, 1, 2, 2, 2, 3, 3, 0])
NUM_ITEMS = len(CATEGORIES) - 1
SURE_CLICK = -50.0  # no-click utility against every item's utility 0


def simulator(behaviour: UserBehaviour, users: int, categories: torch.Tensor | None = CATEGORIES) -> UserSimulator:
    data = SequenceData(
        items=torch.full((users,), 9),
        timestamps=torch.zeros(users, dtype=torch.float64),
        ratings=None,
        offsets=torch.arange(users + 1),
        user_ids=list(range(users)),
        item_ids=list(range(NUM_ITEMS)),
        item_info=pd.DataFrame({"title": [str(i) for i in range(NUM_ITEMS)]}),
    )
    model = ResponseModel(dim=4, dropout=0.0)
    model.build(NUM_ITEMS, None)
    model.calibration.copy_(torch.tensor([0.0, 0.0]))  # every item's click utility is 0
    return UserSimulator(
        model, behaviour, data, torch.ones(users, dtype=torch.long), torch.arange(users), 4, 0, categories
    )


def play(behaviour: UserBehaviour, slates: list[list], categories: torch.Tensor | None = CATEGORIES):
    """Each user's slates, step by step ([users, steps] one-item slates or [users, steps, K]); returns the
    step (1-based) at which each user's session ended (0: still on), rewards [users, steps], left [users]."""
    slates = torch.tensor(slates)
    slates = slates.unsqueeze(2) if slates.ndim == 2 else slates
    env = simulator(behaviour, len(slates), categories)
    env.reset(torch.arange(len(slates)))
    done, rewards = [], []
    for step in range(slates.shape[1]):
        _, reward, over = env.step(slates[:, step])
        done.append(over)
        rewards.append(reward)
    done = torch.stack(done, 1)
    ended = torch.where(done.any(1), done.int().argmax(1) + 1, 0)
    return ended, torch.stack(rewards, 1), env.state.left


def test_quit_rule_window_2_threshold_0_quits_on_a_click_of_a_category_among_the_last_two_clicks():
    behaviour = UserBehaviour(
        mode="FreeB", quit=QuitRule(window=2, threshold=0), max_steps=6, no_click_utility=SURE_CLICK
    )
    ended, rewards, left = play(
        behaviour,
        [
            [1, 4, 2, 5, 5, 5],  # category 1 clicked again with [1, 2] in the window: quits at step 3
            [1, 4, 7, 2, 5, 8],  # no category twice within two clicks: plays to max_steps
            [1, 1, 5, 5, 5, 5],  # FreeB: the same item again is an ordinary click, and a repeat category
            [9, 9, 9, 1, 4, 2],  # item 9 has no category: never counts; [1, 2] then a 1 at step 6
            [1, 4, 0, 2, 5, 5],  # the empty slate (no click) leaves the window [1, 2]: quits at step 4
        ],
    )
    assert ended.tolist() == [3, 6, 2, 6, 4]
    assert left.tolist() == [True, False, True, True, True]
    # the click that bores the user is still consumed and rewarded; nothing is earned after the end
    assert rewards.tolist() == [
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 1],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 1],
        [1, 1, 0, 1, 0, 0],
    ]


def test_quit_rule_window_3_threshold_1_quits_on_the_third_of_a_category_within_three_clicks():
    behaviour = UserBehaviour(
        mode="NX_0", quit=QuitRule(window=3, threshold=1), max_steps=6, no_click_utility=SURE_CLICK
    )
    ended, rewards, left = play(
        behaviour,
        [
            [1, 2, 4, 3, 5, 6],  # window [1, 1, 2] at step 4, category 1 again: quits
            [1, 4, 7, 2, 5, 8],  # each category at most once in any window: max_steps
            [1, 2, 3, 4, 5, 6],  # [-, 1, 1] then a third 1: quits at step 3
            [1, 4, 2, 5, 6, 7],  # [2, 1, 2] then a 2: quits at step 5
            [1, 1, 2, 3, 4, 5],  # NX_0: the consumed 1 cannot be clicked (no click, no reward); quits at 4
        ],
    )
    assert ended.tolist() == [4, 6, 3, 5, 4]
    assert left.tolist() == [True, False, True, True, True]
    assert rewards[4].tolist() == [1, 0, 1, 1, 0, 0]


def test_the_shown_variant_fills_the_window_with_every_shown_item():
    slates = [[[1, 4], [2, 5]]] * 40  # categories (1, 2) then (1, 2)
    shown = UserBehaviour(mode="FreeB", quit=QuitRule(2, 0, over="shown"), max_steps=5, no_click_utility=SURE_CLICK)
    ended, _, _ = play(shown, slates)
    assert (ended == 2).all()  # whichever is clicked at step 2, its category was shown at step 1
    clicked = UserBehaviour(mode="FreeB", quit=QuitRule(2, 0), max_steps=5, no_click_utility=SURE_CLICK)
    env = simulator(clicked, 40)
    env.reset(torch.arange(40))
    first, _, _ = env.step(torch.tensor([[1, 4]] * 40))
    second, _, done = env.step(torch.tensor([[2, 5]] * 40))
    same = torch.equal(first, second)  # the same position has the same category at both steps
    assert torch.equal(done, (first == second).all(1)) and not same and done.any()


def test_remember_appends_present_categories_in_order_and_keeps_the_last_window():
    recent, categories = torch.tensor([[0, 1], [4, 5]]), torch.tensor([[2, 0, 3], [6, 7, 8]])
    present = torch.tensor([[True, False, True], [False, False, False]])
    assert remember(recent, categories, present).tolist() == [[2, 3], [4, 5]]
    assert QuitRule(2).bored(
        torch.tensor([[0, 1], [0, 0], [1, 1]]), torch.tensor([1, 0, 1]), torch.tensor([True, True, False])
    ).tolist() == [True, False, False]


def test_temper_falls_by_cost_times_the_no_click_probability_and_the_user_leaves_when_it_is_used_up():
    behaviour = UserBehaviour(
        temper=Temper(initial=1.0, cost=1.0), initial_patience=100.0, repeats="allow", max_steps=10
    )
    # all utilities 0 with a no-click utility of 0: a slate of K items goes unclicked with probability 1 / (K + 1)
    ended, _, left = play(behaviour, [[[1, 2, 3]] * 6, [[0, 0, 0]] * 6, [[1, 0, 0]] * 6])
    assert ended.tolist() == [4, 1, 2] and left.all()
    decaying = UserBehaviour(
        temper=Temper(initial=1.0, cost=1.0, decay=0.25), initial_patience=100.0, repeats="allow", max_steps=10
    )
    assert play(decaying, [[[1, 2, 3]] * 6])[0].tolist() == [2]  # 0.25 + 0.25 a step


def test_nx_x_plays_exactly_max_steps_slates():
    behaviour = UserBehaviour(mode="NX_X", max_steps=5, no_click_utility=SURE_CLICK)
    assert behaviour.masks_repeats and behaviour.repeats == "forbid"
    # ignored slates (patience would end it at step 3), consumed items and one category over and over
    ended, rewards, left = play(behaviour, [[0] * 7, [9] * 7, [1, 2, 3, 1, 2, 3, 1]], categories=None)
    assert ended.tolist() == [5, 5, 5] and not left.any()
    assert rewards.tolist() == [[0] * 7, [0] * 7, [1, 1, 1, 0, 0, 0, 0]]


def test_freeb_allows_repeats_and_nx_0_forbids_them_without_charging_patience():
    quit = QuitRule(window=1)
    free, strict = (
        UserBehaviour(mode=m, quit=quit, max_steps=4, no_click_utility=SURE_CLICK) for m in ("FreeB", "NX_0")
    )
    assert not free.masks_repeats and free.repeats == "allow"
    assert strict.masks_repeats and strict.repeats == "forbid"
    # the logged item 9 (no category) shown again: FreeB clicks it every time, NX_0 never can
    assert play(free, [[9] * 4])[1].tolist() == [[1, 1, 1, 1]]
    ended, rewards, left = play(strict, [[9] * 4])
    assert rewards.tolist() == [[0, 0, 0, 0]] and ended.tolist() == [4] and not left.any()  # no patience to lose


def test_variety_rewards_a_change_of_category_and_depth_a_repeat_of_it():
    categories = CATEGORIES.clone()
    categories[8] = 0  # item 8 without a category
    slates = [
        [1, 4, 5, 8, 6, 2],  # categories 1, 2, 2, none, 2, 1
        [1, 0, 2, 7, 0, 3],  # 1, no click, 1, 3, no click, 1
    ]
    seeking, deep, plain = (
        play(UserBehaviour(mode="NX_X", max_steps=6, no_click_utility=SURE_CLICK, variety=v), slates, categories)[1]
        for v in (0.5, -1.0, 0.0)
    )
    # the first click earns 1; then (1 + variety) in a new category, (1 - variety) in the same one; item 8
    # earns 1 and keeps the previous category (2, for item 6); a slate without a click changes nothing
    assert seeking.tolist() == [[1, 1.5, 0.5, 1, 0.5, 1.5], [1, 0, 0.5, 1.5, 0, 1.5]]
    assert deep.tolist() == [[1, 0, 2, 1, 2, 0], [1, 0, 2, 0, 0, 0]]
    assert plain.tolist() == [[1, 1, 1, 1, 1, 1], [1, 0, 1, 1, 0, 1]]


def test_category_reward_scales_each_click_by_its_category_factor():
    behaviour = UserBehaviour(mode="NX_X", max_steps=4, no_click_utility=SURE_CLICK, category_reward={2: 3.0, 3: 0.0})
    # categories 1 (factor 1), 2 (3), 3 (0), and no click
    assert play(behaviour, [[1, 4, 7, 0]])[1].tolist() == [[1, 3, 0, 0]]


def test_in_mode_replays_the_same_user_under_another_protocol():
    temper = Temper(initial=2.0)
    nx_0 = UserBehaviour(mode="NX_0", quit=QuitRule(2, 0), temper=temper, max_steps=6, no_click_utility=SURE_CLICK)
    free, exact, again = nx_0.in_mode("FreeB"), nx_0.in_mode("NX_X"), nx_0.in_mode("NX_0")
    assert (free.repeats, free.quit, free.temper) == ("allow", nx_0.quit, temper)
    assert (exact.repeats, exact.quit, exact.temper) == ("forbid", None, None)
    kept = set(inspect.signature(UserBehaviour).parameters) - {"mode", "repeats", "quit", "temper"}
    for other in (free, exact, again):
        assert {name: getattr(other, name) for name in kept} == {name: getattr(nx_0, name) for name in kept}
    # category 1 twice within two clicks; the logged item 9 again and again, which NX_0 does not let
    # the user click: the temper (2) falls by 1 a slate
    slates = [[1, 4, 2, 5, 5, 5], [9] * 6]
    assert play(again, slates)[0].tolist() == play(nx_0, slates)[0].tolist() == [3, 2]
    assert play(free, slates)[1].tolist() == [[1, 1, 1, 0, 0, 0], [1] * 6]  # FreeB: item 9 is a sure click
    assert play(exact, slates)[0].tolist() == [6, 6]  # neither quit rule nor temper: all six slates
    with pytest.raises(ValueError, match="ends sessions by the quit rule"):
        UserBehaviour().in_mode("NX_0")  # patience without a quit rule has none to keep


def test_the_default_is_the_patience_model():
    behaviour = UserBehaviour(no_click_utility=SURE_CLICK)
    assert behaviour.mode == "patience" and behaviour.repeats == "forbid" and behaviour.masks_repeats
    assert behaviour.quit is None and behaviour.temper is None and behaviour.max_steps == 20
    # patience 3: ignored slates cost 1 (gone at step 3); a consumed item shown costs 1 more, and is
    # not clickable (gone at step 2); fresh sure clicks without ratings cost nothing (max_steps)
    ended, rewards, left = play(behaviour, [[0] * 20, [9] * 20, list(range(1, 9)) * 2 + [1, 2, 3, 4]], categories=None)
    assert ended.tolist() == [3, 2, 10] and left.tolist() == [True, True, True]
    assert rewards[2, :8].tolist() == [1] * 8  # slates 9 and 10 repeat items 1 and 2: 2 each


def test_bad_session_settings_are_clear_errors():
    with pytest.raises(ValueError, match="window >= 1"):
        QuitRule(window=0)
    with pytest.raises(ValueError, match="threshold >= 0"):
        QuitRule(window=2, threshold=-1)
    with pytest.raises(ValueError, match="quit.over"):
        QuitRule(window=2, over="slate")
    with pytest.raises(ValueError, match="temper needs initial > 0"):
        Temper(initial=0.0)
    with pytest.raises(ValueError, match="never falls"):
        Temper(initial=1.0, cost=0.0)
    with pytest.raises(ValueError, match="mode must be one of"):
        UserBehaviour(mode="NX")
    with pytest.raises(ValueError, match="set quit"):
        UserBehaviour(mode="FreeB")
    with pytest.raises(ValueError, match="leave quit and temper unset"):
        UserBehaviour(mode="NX_X", quit=QuitRule(2))
    with pytest.raises(ValueError, match="leave UserBehaviour.repeats unset"):
        UserBehaviour(mode="FreeB", quit=QuitRule(2), repeats="forbid")
    with pytest.raises(ValueError, match="variety must be in"):
        UserBehaviour(variety=1.5)
    with pytest.raises(ValueError, match="`category` option"):
        simulator(UserBehaviour(quit=QuitRule(2)), 2, categories=None)
    with pytest.raises(ValueError, match="`category` option"):
        simulator(UserBehaviour(variety=0.5), 2, categories=None)
    with pytest.raises(ValueError, match="category ids >= 1 to factors >= 0"):
        UserBehaviour(category_reward={0: 2.0})
    with pytest.raises(ValueError, match="one id per item"):
        simulator(UserBehaviour(), 2, categories=CATEGORIES[:-1])


def test_session_components_read_from_yaml():
    parser = jsonargparse.ArgumentParser()
    parser.add_argument("--behaviour", type=UserBehaviour)
    config = parser.parse_string(
        """
        behaviour:
          class_path: lightning_rec.rl.UserBehaviour
          init_args:
            mode: FreeB
            max_steps: 30
            quit: {window: 4, threshold: 1}
            temper: {initial: 5.0, cost: 2.0}
        """
    )
    behaviour = parser.instantiate_classes(config).behaviour
    assert behaviour.quit == QuitRule(window=4, threshold=1) and behaviour.temper == Temper(5.0, 2.0)
    assert behaviour.max_steps == 30 and not behaviour.masks_repeats


def test_rollout_masks_repeats_except_in_freeb():
    """The rollout leaves consumed and shown items out of slates in NX_0; in FreeB a greedy agent
    that prefers one item shows it again, and the episodes' masks say what was masked."""
    from lightning_rec.rl.agents import PopularityAgent
    from lightning_rec.rl.rollout import rollout

    popularity = torch.arange(NUM_ITEMS + 1, dtype=torch.float)  # item 9 (logged) first, then 8, 7...
    quit = QuitRule(window=4, threshold=10)  # never quits within 3 steps
    for mode, expected in (("NX_0", [[8], [7], [6]]), ("FreeB", [[9], [9], [9]])):
        behaviour = UserBehaviour(mode=mode, quit=quit, max_steps=3, no_click_utility=50.0)  # no clicks
        episodes = rollout(simulator(behaviour, 2), PopularityAgent(popularity), torch.arange(2), slate_size=1)
        assert episodes.slates[0].tolist() == expected
        blocked = episodes.blocked()
        assert blocked[:, :, 0].all() and blocked[0, 2, 9] == (mode == "NX_0") and blocked[0, 2, 8] == (mode == "NX_0")
