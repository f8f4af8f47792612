"""PolicyEvaluation: every policy in the evaluation simulator and on the offline test split.

    lightning-rec test -c configs/rl-evaluation-ml-latest-small.yaml

Online: random, popularity, the supervised (pretrained) recommender and each named RL policy play
`episodes_per_user` episodes per user of the checkpoint's "eval" simulator (the users and
weights no policy was trained on), greedily (top-K of their scores, consumed and already shown
items masked), with the same random clicks for every policy. Offline: Recall/NDCG on the test
split, history masked, for the same policies. Each policy's return and test NDCG@k are also given
as a ratio to the supervised policy's with a paired standard error (same users, same clicks), so
a difference can be told from noise. One table: printed, logged (test/<policy>/<metric>,
plus a table and the figure where the logger takes them, as W&B's does) and written to
`output_dir` as table.csv, table.md and reward_curves.png.
"""

from __future__ import annotations

import lightning as L
import pandas as pd
import torch

from lightning_rec.metrics import ndcg_of_ranks, pessimistic_ranks, ranking_metrics
from lightning_rec.rl.agents import PopularityAgent, RandomAgent, RecommenderAgent, SlateAgent
from lightning_rec.rl.behaviour import UserBehaviour
from lightning_rec.rl.environments import Environment, stage_environment
from lightning_rec.rl.rollout import rollout
from lightning_rec.rl.tables import online_metrics, paired_ratio, reward_curve, write_report
from lightning_rec.scoring import mask_scores
from lightning_rec.stages.pretraining import load_recommender


class PolicyEvaluation(L.LightningModule):
    """Runs under `lightning-rec test` with the SequenceDataModule the policies were trained on.

    `supervised` is the pretraining checkpoint; `policies` maps names to PolicyFineTuner (or any
    recommender) checkpoints. Policies are judged in `environment` (rl/environments.py: e.g. a
    GroundTruth reward matrix; then `simulator: null`), by default the "eval" role of the
    `simulator` checkpoint. `behaviour`, `slate_size` and `context_len` should be those the RL
    policies were trained with.
    """

    def __init__(
        self,
        simulator: str | None,
        supervised: str,
        policies: dict[str, str] | None = None,
        behaviour: UserBehaviour | None = None,
        slate_size: int = 10,
        context_len: int = 30,
        episodes_per_user: int = 4,
        seed: int = 0,
        ks: list[int] = [10],
        output_dir: str = "outputs/rl-evaluation",
        environment: Environment | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.environment = stage_environment(environment, simulator)
        self.behaviour = behaviour if behaviour is not None else UserBehaviour()
        self.recommenders: torch.nn.ModuleDict | None = None  # loaded in setup

    def setup(self, stage: str) -> None:
        hp = self.hparams
        paths = {"supervised": hp.supervised, **(hp.policies or {})}
        self.recommenders = torch.nn.ModuleDict({name: load_recommender(path).eval() for name, path in paths.items()})
        datamodule = self.trainer.datamodule
        self.popularity = datamodule.train_item_counts()
        num_items = datamodule.data.num_items
        names = ["random", "popularity", *self.recommenders]
        self.metrics = torch.nn.ModuleDict(
            {name: ranking_metrics(self.hparams.ks, num_items, prefix="") for name in names}
        )
        self.offline_generator = torch.Generator().manual_seed(self.hparams.seed)
        self.test_ranks: dict[str, list[torch.Tensor]] = {name: [] for name in names}

    def test_step(self, batch: dict, batch_idx: int) -> None:
        history = batch["history"]
        baselines = {
            "random": torch.rand(len(history), len(self.popularity), generator=self.offline_generator).to(self.device),
            "popularity": self.popularity.to(self.device).expand(len(history), -1),
        }
        offline = {name: mask_scores(scores, history) for name, scores in baselines.items()}
        offline.update(
            {name: recommender.score(batch["input"], history) for name, recommender in self.recommenders.items()}
        )
        for name, scores in offline.items():
            self.metrics[name].update(scores, batch["target"])
            self.test_ranks[name].append(pessimistic_ranks(scores, batch["target"]).cpu())

    def on_test_epoch_end(self) -> None:
        datamodule = self.trainer.datamodule
        data, hp = datamodule.data, self.hparams
        simulator = self.environment.simulator("eval", datamodule, self.behaviour, hp.seed, self.device)
        users = simulator.users.repeat(hp.episodes_per_user)
        agents: dict[str, SlateAgent] = {
            "random": RandomAgent(data.num_items, hp.seed),
            "popularity": PopularityAgent(self.popularity.to(self.device)),
        }
        agents.update(
            {
                name: RecommenderAgent(recommender, hp.context_len, self.behaviour.max_steps)
                for name, recommender in self.recommenders.items()
            }
        )
        rows, curves, returns = [], {}, {}
        for name, agent in agents.items():
            simulator.seed(hp.seed)  # the same random clicks for every policy
            episodes = rollout(simulator, agent, users, slate_size=hp.slate_size)
            offline = {
                key: float(value)
                for key, value in self.metrics[name].compute().items()
                if key.split("@")[0] in ("recall", "ndcg")
            }
            rows.append(
                {
                    "policy": name,
                    **online_metrics(episodes, data.num_items),
                    **{f"test_{key}": value for key, value in offline.items()},
                }
            )
            curves[name], returns[name] = (
                reward_curve(episodes, self.behaviour.max_steps),
                episodes.rewards.sum(1).cpu(),
            )
        ranks = {name: torch.cat(batches) for name, batches in self.test_ranks.items()}
        for row in rows:
            row.update(self._versus_supervised(row["policy"], returns, ranks))
        table = pd.DataFrame(rows)
        paths = write_report(table, curves, hp.output_dir)
        print(
            f"\nEvaluation simulator: {len(simulator.users)} users x {hp.episodes_per_user} episodes\n"
            f"{table.to_string(index=False)}"
        )
        print(f"Written: {', '.join(map(str, paths.values()))}")
        self.log_dict(
            {f"test/{row['policy']}/{key}": value for row in rows for key, value in row.items() if key != "policy"}
        )
        logger = self.logger
        if hasattr(logger, "log_table"):
            logger.log_table(key="rl/evaluation", dataframe=table)
        if hasattr(logger, "log_image"):
            logger.log_image(key="rl/reward_curves", images=[str(paths["png"])])

    def _versus_supervised(
        self, name: str, returns: dict[str, torch.Tensor], ranks: dict[str, torch.Tensor]
    ) -> dict[str, float]:
        """Return and test NDCG@k of policy `name` over the supervised policy's, with paired SEs
        (`returns`: each policy's episode returns, `ranks`: its test targets' ranks)."""
        compared = {"return": (returns[name], returns["supervised"])}
        for k in self.hparams.ks:
            compared[f"test_ndcg@{k}"] = (ndcg_of_ranks(ranks[name], k), ndcg_of_ranks(ranks["supervised"], k))
        columns = {}
        for key, (values, base) in compared.items():
            columns[f"{key}_vs_supervised"], columns[f"{key}_vs_supervised_se"] = paired_ratio(values, base)
        return columns
