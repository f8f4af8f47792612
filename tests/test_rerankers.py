"""Slate baselines: epsilon-greedy exploration, category spreading and the quit-rule oracle, on tiny
hand-made scores and categories whose slates are worked out by hand."""

from __future__ import annotations

import jsonargparse
import pytest
import torch
from test_session_dynamics import CATEGORIES as SIMULATED_CATEGORIES
from test_session_dynamics import SURE_CLICK, simulator

from lightning_rec.rl import PopularityAgent, SlateAgent, UserBehaviour, rollout
from lightning_rec.rl.behaviour import QuitRule
from lightning_rec.rl.rerankers import CategorySpread, EpsilonGreedy, QuitOracle, Reranker, tune

pytestmark = pytest.mark.usefixtures("one_thread")

CATEGORIES = torch.tensor([0, 1, 1, 1, 2, 2, 3, 0])  # items 1-3: category 1, 4-5: 2, 6: 3, 7: none
SCORES = torch.tensor([float("-inf"), 10, 9, 8, 7, 6, 5, 4])


class Fixed(SlateAgent):
    def __init__(self, scores: torch.Tensor):
        self.fixed = scores

    def scores(self) -> torch.Tensor:
        return self.fixed


def started(reranker: Reranker, rows: int, scores: torch.Tensor = SCORES, categories=CATEGORIES) -> Reranker:
    agent = reranker.wrap(Fixed(scores.expand(rows, -1)), categories)
    agent.start(simulator(UserBehaviour(), rows).reset(torch.arange(rows)))
    return agent


def test_category_spread_penalises_categories_already_in_the_slate_or_recently_clicked():
    agent = started(CategorySpread(penalty=2.5), 2)
    agent.observe(torch.tensor([0, 4]))  # no click; a click of category 2
    # row 0: 1 (10); 4 (7 beats 9 - 2.5); 2 (9 - 2.5 beats 6 - 2.5 and 5); 6 (5 beats 8 - 5, 6 - 2.5, 4)
    # row 1: 1; 2 (6.5 beats 7 - 2.5); 6 (5 beats 8 - 5 and 4.5); 4 (4.5 beats 4, 3.5, 3)
    assert agent.select(SCORES.expand(2, -1), 4).tolist() == [[1, 4, 2, 6], [1, 2, 6, 4]]
    blocked = SCORES.clone()
    blocked[1] = float("-inf")  # blocked items stay out: 2; 4; 3 (8 - 2.5 beats 6 - 2.5, 5); 6
    assert started(CategorySpread(penalty=2.5), 1).select(blocked.unsqueeze(0), 4).tolist() == [[2, 4, 3, 6]]
    assert started(CategorySpread(penalty=0.0), 1).select(SCORES.unsqueeze(0), 4).tolist() == [[1, 2, 3, 4]]
    # a huge penalty: one item per category, then the item without a category (never penalised)
    assert started(CategorySpread(penalty=100.0), 1).select(SCORES.unsqueeze(0), 4).tolist() == [[1, 4, 6, 7]]


def test_category_spread_remembers_only_its_last_memory_clicks():
    slates = []
    for memory in (1, 2):
        agent = started(CategorySpread(penalty=2.5, memory=memory), 1)
        agent.observe(torch.tensor([4]))
        agent.observe(torch.tensor([1]))
        slates.append(agent.select(SCORES.unsqueeze(0), 3).tolist()[0])
    assert slates == [[1, 4, 6], [1, 6, 4]]  # memory 2 still holds the click of category 2


def test_quit_oracle_leaves_out_the_categories_that_would_make_the_user_quit():
    agent = started(QuitOracle(window=2, threshold=0), 1)
    top = SCORES.unsqueeze(0)
    assert agent.select(top, 4).tolist() == [[1, 2, 3, 4]]  # nothing clicked yet: the base ranking
    agent.observe(torch.tensor([1]))
    assert agent.select(top, 4).tolist() == [[4, 5, 6, 7]]
    agent.observe(torch.tensor([4]))
    assert agent.select(top, 4).tolist() == [[6, 7, 0, 0]]  # only safe items; the rest stays empty
    agent.observe(torch.tensor([0]))  # no click: the window is unchanged
    assert agent.select(top, 4).tolist() == [[6, 7, 0, 0]]
    agent.observe(torch.tensor([7]))  # no category: category 1 drops out of the window
    assert agent.select(top, 4).tolist() == [[1, 2, 3, 6]]
    patient = started(QuitOracle(window=3, threshold=1), 2)
    patient.observe(torch.tensor([1, 1]))
    patient.observe(torch.tensor([4, 2]))
    assert patient.select(top.expand(2, -1), 3).tolist() == [[1, 2, 3], [4, 5, 6]]


def test_in_the_simulator_the_oracle_never_lets_the_user_quit_where_the_base_ranking_does():
    behaviour = UserBehaviour(mode="NX_0", quit=QuitRule(2, 0), max_steps=6, no_click_utility=SURE_CLICK)
    popularity = PopularityAgent(torch.arange(10, 0, -1))  # item 1 first, then 2, ...
    env = simulator(behaviour, 1)
    plain = rollout(env, popularity, torch.arange(1), slate_size=1)
    assert plain.clicked.tolist() == [[1, 2]] and env.state.left.all()  # two of category 1 in a row
    oracle = QuitOracle(2, 0).wrap(popularity, SIMULATED_CATEGORIES)
    episodes = rollout(env, oracle, torch.arange(1), slate_size=1)
    assert episodes.clicked.tolist() == [[1, 4, 7, 2, 5, 8]] and not env.state.left.any()


def test_tuning_picks_the_penalty_that_earns_most_in_the_environment_it_is_given():
    def candidates():  # item 1 first, then 2, ...: the greedy slates repeat category 1
        popularity = PopularityAgent(torch.arange(10, 0, -1))
        return {value: CategorySpread(value).wrap(popularity, SIMULATED_CATEGORIES) for value in (0.0, 0.5, 20.0)}

    users = torch.arange(3)
    bored = simulator(UserBehaviour(mode="NX_0", quit=QuitRule(2, 0), max_steps=6, no_click_utility=SURE_CLICK), 3)
    # penalty 0 or 0.5 (under the score gaps of 1): items 1, 2 and the user quits; 20: 1, 4, 7, 2, 5, 8
    assert tune(candidates(), bored, users, slate_size=1) == (20.0, {0.0: 2.0, 0.5: 2.0, 20.0: 6.0})
    # exactly 6 slates and nobody quits: every penalty earns the same, the first (the least) is kept
    exact = simulator(UserBehaviour(mode="NX_X", max_steps=6, no_click_utility=SURE_CLICK), 3)
    assert tune(candidates(), exact, users, slate_size=1) == (0.0, {0.0: 6.0, 0.5: 6.0, 20.0: 6.0})


def test_epsilon_greedy_replaces_positions_by_random_free_items():
    logits = SCORES.clone()
    logits[5] = float("-inf")  # blocked
    assert started(EpsilonGreedy(0.0), 1).select(logits.unsqueeze(0), 3).tolist() == [[1, 2, 3]]
    # epsilon 1: every position is a random item outside the greedy slate and not blocked: 4, 6, 7
    slates = started(EpsilonGreedy(1.0), 50).select(logits.expand(50, -1), 3)
    assert (slates.sort(1).values == torch.tensor([4, 6, 7])).all() and len(set(map(tuple, slates.tolist()))) > 1
    wide = torch.randn(4000, 51)
    wide[:, 0] = float("-inf")
    greedy = wide.topk(5, dim=1).indices
    explored = started(EpsilonGreedy(0.3, seed=1), 4000, wide).select(wide, 5)
    assert abs((explored != greedy).float().mean() - 0.3) < 0.03
    assert (explored.sort(1).values.diff(dim=1) > 0).all() and (explored > 0).all()  # distinct items, no padding


def test_bad_reranker_settings_are_clear_errors():
    with pytest.raises(ValueError, match="epsilon must be in"):
        EpsilonGreedy(1.5)
    with pytest.raises(ValueError, match="penalty >= 0"):
        CategorySpread(-1.0)
    with pytest.raises(ValueError, match="window >= 1"):
        QuitOracle(window=0)
    agent = started(CategorySpread(), 1, categories=None)
    with pytest.raises(ValueError, match="`category` option"):
        agent.select(SCORES.unsqueeze(0), 2)


def test_rerankers_read_from_yaml():
    parser = jsonargparse.ArgumentParser()
    parser.add_argument("--reranker", type=Reranker)
    for text, expected in (
        ("{class_path: lightning_rec.rl.rerankers.CategorySpread, init_args: {penalty: 0.5}}", CategorySpread),
        ("{class_path: lightning_rec.rl.rerankers.QuitOracle, init_args: {window: 4, threshold: 0}}", QuitOracle),
        ("{class_path: lightning_rec.rl.rerankers.EpsilonGreedy, init_args: {epsilon: 0.2}}", EpsilonGreedy),
    ):
        reranker = parser.instantiate_classes(parser.parse_string(f"reranker: {text}")).reranker
        assert isinstance(reranker, expected)
