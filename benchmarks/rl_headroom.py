"""How much return the evaluation environment holds, and how much of it carries over from the
training environment: a diagnostic for the RL stage's targets and for simulator design.

    python benchmarks/rl_headroom.py --simulator outputs/simulator-ml-latest-small/checkpoints/best.ckpt \
        --supervised outputs/sasrec-ml-latest-small/checkpoints/best.ckpt \
        --policy ppo=outputs/ppo-ml-latest-small/checkpoints/last.ckpt

Greedy slates in the evaluation environment (its users, the same clicks for every agent, as in
PolicyEvaluation) from: the supervised recommender (and any --policy); an oracle that ranks by the
evaluation simulator's own click utility, alone and plus the log of its predicted satisfaction;
and the same two rankings from the training simulator's model (what a policy trained there could
learn at best, if it learned that model exactly). Prints return, CTR, length and each return
relative to the supervised policy's. `--environment train` plays the same agents in the training
environment instead: how much of its own environment's headroom a policy took.
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch
import yaml

from lightning_rec.data import SequenceDataModule
from lightning_rec.data.sources import MovieLensLatestSmall
from lightning_rec.memory import keep_freed_memory
from lightning_rec.rl import (
    RecommenderAgent,
    ResponseModel,
    SlateAgent,
    UserBehaviour,
    UserSimulator,
    rollout,
)
from lightning_rec.rl.simulator_artifact import load_simulators
from lightning_rec.rl.tables import online_metrics
from lightning_rec.stages.fine_tuning import load_recommender


class SimulatorModelAgent(SlateAgent):
    """Ranks by a response model's click utility of each item for the current simulated user (read
    from the environment's state), plus, with `satisfaction`, the log of the predicted rating
    rescaled to [0, 1]: an upper bound when the model is the environment's own."""

    def __init__(self, env: UserSimulator, model: ResponseModel, satisfaction: bool):
        self.env, self.model, self.satisfaction = env, model, satisfaction

    def scores(self) -> torch.Tensor:
        model = self.model
        state = model.encode(self.env.state.history)[:, -1]
        scale, shift = model.calibration
        utility = scale * model.scores(state) + shift
        if not self.satisfaction:
            return utility
        low, high = model.rating_range
        rating = ((model.rating(state) - low) / (high - low)).clamp(min=1e-3)
        return utility + rating.log()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--simulator", default="outputs/simulator-ml-latest-small/checkpoints/best.ckpt")
    parser.add_argument("--supervised", default="outputs/sasrec-ml-latest-small/checkpoints/best.ckpt")
    parser.add_argument("--policy", action="append", default=[], help="name=checkpoint of an RL policy (repeatable)")
    parser.add_argument(
        "--config",
        default="configs/rl-evaluation-ml-latest-small.yaml",
        help="behaviour, slate size, context and episodes are read from it",
    )
    parser.add_argument(
        "--environment", choices=("eval", "train"), default="eval", help="the environment the agents play in"
    )
    parser.add_argument("--episodes", type=int, help="episodes per user (default: the recipe's)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    data = SequenceDataModule(source=MovieLensLatestSmall(), max_len=50)  # as in the recipes
    data.prepare_data()
    data.setup("fit")
    recipe = yaml.safe_load(open(args.config))["model"]["init_args"]
    behaviour = UserBehaviour(**recipe["behaviour"]["init_args"])
    simulators = load_simulators(args.simulator, data.data, data.split.train_end, behaviour, recipe["seed"])
    env = simulators[args.environment]
    episodes_per_user = args.episodes or recipe["episodes_per_user"]
    users = env.users.repeat(episodes_per_user)
    recommenders = {"supervised": args.supervised, **dict(policy.split("=", 1) for policy in args.policy)}
    agents: dict[str, SlateAgent] = {
        name: RecommenderAgent(load_recommender(path).eval(), recipe["context_len"], behaviour.max_steps)
        for name, path in recommenders.items()
    }
    for source in ("eval", "train"):
        model = simulators[source].model  # in eval mode: no dropout in the scores
        agents[f"{source} simulator: clicks"] = SimulatorModelAgent(env, model, satisfaction=False)
        agents[f"{source} simulator: clicks + satisfaction"] = SimulatorModelAgent(env, model, satisfaction=True)
    rows = []
    for name, agent in agents.items():
        env.seed(recipe["seed"])  # the same random clicks for every agent
        with torch.no_grad():
            episodes = rollout(env, agent, users, slate_size=recipe["slate_size"])
        rows.append({"agent": name, **online_metrics(episodes, data.data.num_items)})
    table = pd.DataFrame(rows)
    table["R_tra / supervised"] = table["R_tra"] / table.loc[table.agent == "supervised", "R_tra"].item()
    print(
        f"{args.environment} environment: {len(env.users)} users x {episodes_per_user} episodes, "
        f"greedy slates of {recipe['slate_size']}"
    )
    print(table.drop(columns="coverage").to_string(index=False, float_format=lambda x: f"{x:.3f}"))


if __name__ == "__main__":
    main()
