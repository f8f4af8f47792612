"""PolicyEvaluation: every policy in the evaluation simulator and on the offline test split.

    lightning-rec test -c configs/rl-evaluation-ml-latest-small.yaml

Online: random, popularity, the supervised (pretrained) recommender, the slate baselines over its
scores (epsilon-greedy; category spreading, its penalty tuned in the "train" environment only),
each named RL policy and, where the behaviour has a quit rule, the oracle told that rule (a
ceiling) play `episodes_per_user` episodes per user of the "eval" environment (by default the
simulator checkpoint's: the users and weights no policy was trained on), greedily (top-K of their
scores, or the re-ranker's slate; consumed and already shown items masked except in FreeB), with
the same random clicks for every policy. With `modes`, once per session mode (FreeB, NX_0, NX_X),
one block of the table each. Offline: Recall/NDCG on the test split, history masked, for the policies that
rank the catalogue. Each policy's R_tra and test NDCG@k are also given as a ratio to the
supervised policy's with a paired standard error (same users, same clicks), so a difference can be
told from noise. One table: printed, logged (test/<mode>/<policy>/<metric>, plus a table and the
figure where the logger takes them, as W&B's does) and written to `output_dir` as table.csv,
table.md and reward_curves.png (reward by turn and survival, one row per mode).
"""

from __future__ import annotations

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.utilities import rank_zero_only

from lightning_rec.distributed import gather_rows, keyed_uniform
from lightning_rec.metrics import ndcg_of_ranks, pessimistic_ranks, ranking_metrics
from lightning_rec.rl.agents import PopularityAgent, RandomAgent, RecommenderAgent, SlateAgent
from lightning_rec.rl.behaviour import Mode, UserBehaviour
from lightning_rec.rl.environments import Environment, stage_environment
from lightning_rec.rl.rerankers import CategorySpread, EpsilonGreedy, QuitOracle, tune
from lightning_rec.rl.rollout import play_in_chunks
from lightning_rec.rl.simulator import UserSimulator
from lightning_rec.rl.tables import online_metrics, paired_ratio, reward_curve, write_report
from lightning_rec.scoring import mask_scores
from lightning_rec.stages.fine_tuning import SESSION_DEFAULTS, trained_session
from lightning_rec.stages.pretraining import load_recommender

say = rank_zero_only(print)  # the tables once, from the first process


def agreed_session(trained: dict[str, dict | None], given: dict) -> dict:
    """The behaviour, slate size and context length to evaluate under: each as `given` when not None,
    else as the fine-tuned policies were `trained` (name: their `trained_session`), else SESSION_DEFAULTS."""
    trained = {name: session for name, session in trained.items() if session is not None}
    settings = {}
    for key, default in SESSION_DEFAULTS.items():
        values = {name: session[key] for name, session in trained.items()}
        described = {name: vars(value) if hasattr(value, "__dict__") else value for name, value in values.items()}
        if given[key] is None and len({repr(value) for value in described.values()}) > 1:
            raise ValueError(
                f"the policies were trained under different {key}: {described}; give `{key}` to evaluate them under one"
            )
        settings[key] = given[key] if given[key] is not None else next(iter(values.values()), default)
    return settings


class PolicyEvaluation(L.LightningModule):
    """Runs under `lightning-rec test` with the SequenceDataModule the policies were trained on.

    `supervised` is the pretraining checkpoint; `policies` maps names to PolicyFineTuner (or any
    recommender) checkpoints. Policies are judged in the "eval" role of `environment`
    (rl/environments.py: e.g. a GroundTruth reward matrix; then `simulator: null`), by default of
    the `simulator` checkpoint, and the baselines tuned in its "train" role. `behaviour`,
    `slate_size` and `context_len` are by default those the RL policies were trained under (read
    from their checkpoints, which must agree), so the two recipes cannot drift apart; `modes`
    (default: the behaviour's own) replays the same user under other session protocols
    (`UserBehaviour.in_mode`). `epsilon` is epsilon-greedy's; category spreading takes the penalty
    of `spread_penalties` that earns most in the "train" role (needs the data module's `category`).
    `max_users` plays a fixed random sample of that many users of each role instead of all of them
    (a large dataset's 17,000 simulated users x 30 turns x a dozen policies take hours on a CPU; a
    few thousand give paired SEs of a few %).
    """

    prints_test_table = True  # the evaluation table: the CLI skips Lightning's copy

    def __init__(
        self,
        simulator: str | None,
        supervised: str,
        policies: dict[str, str] | None = None,
        behaviour: UserBehaviour | None = None,
        modes: list[Mode] | None = None,
        slate_size: int | None = None,
        context_len: int | None = None,
        episodes_per_user: int = 4,
        epsilon: float = 0.1,
        spread_penalties: list[float] = [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0],
        seed: int = 0,
        ks: list[int] = [10],
        output_dir: str = "outputs/rl-evaluation",
        environment: Environment | None = None,
        max_users: int | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        if max_users is not None and max_users < 1:
            raise ValueError(f"PolicyEvaluation.max_users must be at least 1 (or null: every user), got {max_users}")
        self.environment = stage_environment(environment, simulator)
        self.given_session = {"behaviour": behaviour, "slate_size": slate_size, "context_len": context_len}
        self.recommenders: torch.nn.ModuleDict | None = None  # loaded in setup

    def setup(self, stage: str) -> None:
        hp = self.hparams
        paths = {"supervised": hp.supervised, **(hp.policies or {})}
        trained = {name: trained_session(path) for name, path in (hp.policies or {}).items()}
        session = agreed_session(trained, self.given_session)
        self.heads = {name: session.get("head") for name, session in trained.items() if session is not None}
        self.behaviour = session["behaviour"] if session["behaviour"] is not None else UserBehaviour()
        self.slate_size, self.context_len = session["slate_size"], session["context_len"]
        say(f"Evaluating {describe(self.behaviour)}, slates of {self.slate_size}, context {self.context_len} events")
        self.recommenders = torch.nn.ModuleDict({name: load_recommender(path).eval() for name, path in paths.items()})
        datamodule = self.trainer.datamodule
        self.popularity = datamodule.train_item_counts()
        num_items = datamodule.data.num_items
        names = ["random", "popularity", *self.recommenders]
        self.metrics = torch.nn.ModuleDict(
            {name: ranking_metrics(self.hparams.ks, num_items, prefix="") for name in names}
        )
        self.test_ranks: dict[str, list[torch.Tensor]] = {name: [] for name in names}
        self.test_users: list[torch.Tensor] = []

    def test_step(self, batch: dict, batch_idx: int) -> None:
        history, users = batch["history"], batch["user"]
        items = torch.arange(len(self.popularity), device=self.device)
        baselines = {  # random scores keyed by (user, item): the same on any number of processes
            "random": keyed_uniform(self.hparams.seed, users.unsqueeze(1), items.unsqueeze(0)),
            "popularity": self.popularity.to(self.device).expand(len(history), -1),
        }
        offline = {name: mask_scores(scores, history) for name, scores in baselines.items()}
        offline.update(
            {name: recommender.score(batch["input"], history) for name, recommender in self.recommenders.items()}
        )
        for name, scores in offline.items():
            self.metrics[name].update(scores, batch["target"])
            self.test_ranks[name].append(pessimistic_ranks(scores, batch["target"]).cpu())
        self.test_users.append(users.cpu())

    def environments(self, behaviour: UserBehaviour) -> dict[str, UserSimulator]:
        """{"train": where baselines are tuned, "eval": where every policy is judged}, under `behaviour`."""
        datamodule, seed = self.trainer.datamodule, self.hparams.seed
        return {
            role: self.environment.simulator(role, datamodule, behaviour, seed, self.device)
            for role in ("train", "eval")
        }

    def on_test_epoch_end(self) -> None:
        hp = self.hparams

        def gathered(batches: list[torch.Tensor]) -> torch.Tensor:  # a process may have had no test batch
            return gather_rows(torch.cat(batches) if batches else torch.zeros(0, dtype=torch.long))

        order = gathered(self.test_users).argsort()  # the users in one order, whatever the processes
        ranks = {name: gathered(batches)[order] for name, batches in self.test_ranks.items()}
        offline = {
            name: {
                f"test_{key}": float(value)
                for key, value in metrics.compute().items()
                if key.split("@")[0] in ("recall", "ndcg")
            }
            for name, metrics in self.metrics.items()
        }
        rows, curves, logs = [], {}, {}
        for mode in hp.modes or [self.behaviour.mode]:
            behaviour = self.behaviour if mode == self.behaviour.mode else self.behaviour.in_mode(mode)
            environments = self.environments(behaviour)
            agents = self._agents(behaviour, environments["train"], logs)
            simulator = environments["eval"]
            users = self._played(simulator).repeat(hp.episodes_per_user)
            block, returns, curves[mode] = [], {}, {}
            for name, (agent, setting) in agents.items():  # the same users and random clicks for every policy
                episodes = play_in_chunks(simulator, agent, users, self.slate_size, hp.seed)
                block.append(
                    {
                        "mode": mode,
                        "policy": name,
                        "setting": setting,
                        **online_metrics(episodes, simulator.num_items),
                        **offline.get(name, {}),
                    }
                )
                curves[mode][name] = reward_curve(episodes, behaviour.max_steps)
                returns[name] = episodes.rewards.sum(1).cpu()
            for row in block:
                row.update(self._versus_supervised(row["policy"], returns, ranks))
            played = len(users) // hp.episodes_per_user
            say(
                f"\n{describe(behaviour)}: eval environment, {played} users x {hp.episodes_per_user} "
                f"episodes\n{pd.DataFrame(block).drop(columns='mode').to_string(index=False)}"
            )
            rows += block
        table = pd.DataFrame(rows)
        for row in rows:
            for key, value in row.items():
                if isinstance(value, float) and value == value:
                    logs[f"test/{row['mode']}/{row['policy']}/{key}"] = value
        self.log_dict(logs, sync_dist=True)  # the same on every process: the episodes were gathered
        if not self.trainer.is_global_zero:
            return
        paths = write_report(table, curves, hp.output_dir)
        print(f"Written: {', '.join(map(str, paths.values()))}")
        logger = self.logger
        if hasattr(logger, "log_table"):
            logger.log_table(key="rl/evaluation", dataframe=table)
        if hasattr(logger, "log_image"):
            logger.log_image(key="rl/reward_curves", images=[str(paths["png"])])

    def _agents(
        self, behaviour: UserBehaviour, train: UserSimulator, logs: dict[str, float]
    ) -> dict[str, tuple[SlateAgent, str]]:
        """Each policy of a block and its setting (the baselines' knobs): category spreading's
        penalty is tuned here, in the `train` environment, and recorded in `logs`."""
        hp, categories = self.hparams, self.trainer.datamodule.catalog.categories
        num_items = self.trainer.datamodule.data.num_items

        def greedy(name: str) -> RecommenderAgent:
            head = self.heads.get(name)
            return RecommenderAgent(
                self.recommenders[name], self.context_len, behaviour.max_steps, head=head, categories=categories
            )

        agents: dict[str, tuple[SlateAgent, str]] = {
            "random": (RandomAgent(num_items, hp.seed), ""),
            "popularity": (PopularityAgent(self.popularity.to(self.device)), ""),
            "supervised": (greedy("supervised"), ""),
            "epsilon-greedy": (
                EpsilonGreedy(hp.epsilon, hp.seed).wrap(greedy("supervised")),
                f"epsilon={hp.epsilon:g}",
            ),
        }
        if categories is not None:
            candidates = {
                value: CategorySpread(value).wrap(greedy("supervised"), categories) for value in hp.spread_penalties
            }
            played = self._played(train)
            users = played.repeat(hp.episodes_per_user)
            penalty, returns = tune(candidates, train, users, self.slate_size, hp.seed)
            tried = ", ".join(f"{value:g}: {value_return:.4g}" for value, value_return in returns.items())
            say(
                f"\n{behaviour.mode}: category-spread penalty tuned in the train environment ({len(played)} users "
                f"x {hp.episodes_per_user}), R_tra by penalty {tried}; chosen {penalty:g}"
            )
            agents["category-spread"] = (candidates[penalty], f"penalty={penalty:g} (tuned in train)")
            logs[f"test/{behaviour.mode}/category-spread/penalty"] = float(penalty)
        agents.update(
            {
                name: (greedy(name), self.heads[name].describe() if self.heads.get(name) is not None else "")
                for name in self.recommenders
                if name != "supervised"
            }
        )
        if behaviour.quit is not None:
            rule = behaviour.quit
            oracle = QuitOracle(rule.window, rule.threshold, rule.over).wrap(greedy("supervised"), categories)
            agents["quit-oracle"] = (oracle, f"told N={rule.window} M={rule.threshold}")
        return agents

    def _played(self, simulator: UserSimulator) -> torch.Tensor:
        """The users of `simulator` that play: all, or a fixed random `max_users` of them."""
        users, most = simulator.users, self.hparams.max_users
        if most is None or most >= len(users):
            return users
        order = torch.randperm(len(users), generator=torch.Generator().manual_seed(self.hparams.seed))
        return users[order[:most].sort().values.to(users.device)]

    def _versus_supervised(
        self, name: str, returns: dict[str, torch.Tensor], ranks: dict[str, torch.Tensor]
    ) -> dict[str, float]:
        """R_tra and test NDCG@k of policy `name` over the supervised policy's, with paired SEs
        (`returns`: each policy's episode returns, `ranks`: the test targets' ranks of the policies
        that rank the catalogue)."""
        compared = {"R_tra": (returns[name], returns["supervised"])}
        if name in ranks:
            for k in self.hparams.ks:
                compared[f"test_ndcg@{k}"] = (ndcg_of_ranks(ranks[name], k), ndcg_of_ranks(ranks["supervised"], k))
        columns = {}
        for key, (values, base) in compared.items():
            columns[f"{key}_vs_supervised"], columns[f"{key}_vs_supervised_se"] = paired_ratio(values, base)
        return columns


def describe(behaviour: UserBehaviour) -> str:
    """The session protocol in words, e.g. 'NX_0 (quit N=4 M=0, at most 30 turns)'."""
    rules = [f"quit N={behaviour.quit.window} M={behaviour.quit.threshold}"] if behaviour.quit is not None else []
    if behaviour.temper is not None:
        rules.append(f"temper {behaviour.temper.initial:g}")
    if behaviour.has_patience:
        rules.append(f"patience {behaviour.initial_patience:g}")
    rules.append(f"{'exactly' if behaviour.mode == 'NX_X' else 'at most'} {behaviour.max_steps} turns")
    return f"{behaviour.mode} ({', '.join(rules)})"
