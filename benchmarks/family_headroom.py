"""Headroom of an environment family for meta-learning: how much a policy tuned in each held-out
environment earns over the one policy that is best across the training environments.

    python benchmarks/family_headroom.py --family benchmarks/family-ml-latest-small.yaml \
        --simulator outputs/demo/simulator/checkpoints/best.ckpt \
        --supervised outputs/demo/hybrid/checkpoints/best.ckpt

The family file names its environments (each a UserBehaviour's init_args) in two lists, `train` and
`held_out`. The policy is the category-spreading re-ranker of the supervised scores, one knob (its
penalty). The pooled knob is the penalty with the highest mean, over the training environments, of
its return divided by that environment's best return; it is chosen in the training simulator (its
users), and every return of the table is played in the evaluation simulator (the other users, the
same random clicks for every penalty). A family leaves meta-learning something to learn only if, on
its held-out environments, the penalty tuned there earns clearly more than the pooled one: the
column `tuned / pooled` (the meta issue asks for at least 1.2), with its paired SE over episodes
(as the RL table's). The tuned penalty is picked on the same episodes, so the ratio is an optimistic
maximum by about its SE where penalties earn nearly the same.
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch
import yaml

from lightning_rec.data import SequenceDataModule
from lightning_rec.data.categories import CategoryField
from lightning_rec.data.sources import MovieLensLatestSmall
from lightning_rec.memory import keep_freed_memory
from lightning_rec.rl import RecommenderAgent, UserBehaviour
from lightning_rec.rl.behaviour import QuitRule, Temper
from lightning_rec.rl.rerankers import CategorySpread
from lightning_rec.rl.rollout import play_in_chunks
from lightning_rec.rl.simulator_artifact import load_simulators
from lightning_rec.rl.tables import paired_ratio
from lightning_rec.stages.fine_tuning import load_recommender


def behaviour_of(options: dict) -> UserBehaviour:
    """A UserBehaviour from a family entry (quit and temper as mappings, as in the recipes' YAML)."""
    options = dict(options)
    if "quit" in options:
        options["quit"] = QuitRule(**options["quit"])
    if "temper" in options:
        options["temper"] = Temper(**options["temper"])
    return UserBehaviour(**options)


def returns_by_penalty(simulators, role, behaviour, agents, users, slate_size, seed) -> torch.Tensor:
    """[penalties, episodes]: each episode's return for each penalty's agent in `role`'s simulator,
    switched to `behaviour` (one response model, read once, plays every environment)."""
    env = simulators[role]
    env.behaviour = behaviour
    return torch.stack([play_in_chunks(env, agent, users, slate_size, seed).rewards.sum(1) for agent in agents])


def headroom(returns: torch.Tensor, pooled: int, penalties: list[float]) -> dict:
    """One environment's row from its returns [penalties, episodes]: the penalty tuned there against
    the pooled one, their ratio with its paired SE, and the mean return of every penalty."""
    means = returns.mean(1)
    tuned = int(means.argmax())
    ratio, se = paired_ratio(returns[tuned], returns[pooled])
    return {
        "tuned penalty": penalties[tuned],
        "R_tra tuned": float(means[tuned]),
        "pooled penalty": penalties[pooled],
        "R_tra pooled": float(means[pooled]),
        "tuned / pooled": ratio,
        "se": se,
        "R_tra by penalty": " ".join(f"{value:.2f}" for value in means.tolist()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="benchmarks/family-ml-latest-small.yaml")
    parser.add_argument("--simulator", default="outputs/demo/simulator/checkpoints/best.ckpt")
    parser.add_argument("--supervised", default="outputs/demo/hybrid/checkpoints/best.ckpt")
    parser.add_argument("--episodes", type=int, default=2, help="episodes per user")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    family = yaml.safe_load(open(args.family))
    seed, slate_size, context_len = family.get("seed", 0), family["slate_size"], family["context_len"]
    data = SequenceDataModule(source=MovieLensLatestSmall(), max_len=50, category=CategoryField(**family["category"]))
    data.prepare_data()
    data.setup("fit")
    environments = {
        role: {name: behaviour_of(options) for name, options in family[role].items()} for role in ("train", "held_out")
    }
    behaviours = [behaviour for entries in environments.values() for behaviour in entries.values()]
    longest = max(behaviour.max_steps for behaviour in behaviours)
    simulators = load_simulators(
        args.simulator, data.data, data.split.train_end, behaviours[0], seed, categories=data.catalog.categories
    )
    recommender = load_recommender(args.supervised).eval()
    penalties = family["penalties"]
    agents = [
        CategorySpread(penalty).wrap(RecommenderAgent(recommender, context_len, longest), data.catalog.categories)
        for penalty in penalties
    ]
    played = {role: simulators[role].users.repeat(args.episodes) for role in ("train", "eval")}
    train_share = []
    for behaviour in environments["train"].values():
        means = returns_by_penalty(simulators, "train", behaviour, agents, played["train"], slate_size, seed).mean(1)
        train_share.append(means / means.max())
    pooled = int(torch.stack(train_share).mean(0).argmax())
    rows = []
    for role, entries in environments.items():
        for name, behaviour in entries.items():
            returns = returns_by_penalty(simulators, "eval", behaviour, agents, played["eval"], slate_size, seed)
            rows.append({"role": role, "environment": name, **headroom(returns, pooled, penalties)})
    print(
        f"category-spread penalties {penalties}; pooled penalty {penalties[pooled]} (train simulator); "
        f"eval simulator, {len(simulators['eval'].users)} users x {args.episodes} episodes, slates of {slate_size}"
    )
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda x: f"{x:.3f}"))


if __name__ == "__main__":
    main()
