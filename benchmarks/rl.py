"""Speed of one PPO update (rollout + optimisation) for 1,000 users x 10-step episodes.

    python benchmarks/rl.py --pretrained outputs/sasrec-ml-latest-small/checkpoints/best.ckpt \
        --simulator outputs/simulator-ml-latest-small/checkpoints/best.ckpt --threads 2

Every user stays the whole 10 steps (patience is made infinite), the worst case. Runs the real
PolicyFineTuner under a real Trainer (ml-latest-small, the PPO recipe's algorithm settings) and
prints the median wall time of an update and of its rollout alone.
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L
import torch
import yaml
from timing import Timer
from torch.utils.data import DataLoader

from lightning_rec.data import SequenceDataModule
from lightning_rec.data.datasets import keep_batch
from lightning_rec.memory import keep_freed_memory
from lightning_rec.rl import PPO, RecommenderAgent, UserBehaviour, rollout
from lightning_rec.rl.simulator_artifact import simulated_users
from lightning_rec.stages.fine_tuning import PolicyFineTuner


class FixedEpisodes(SequenceDataModule):
    """Training batches of exactly `users` users of the training simulator at the end of their logs."""

    def __init__(self, users: torch.Tensor, updates: int, **kwargs):
        super().__init__(**kwargs)
        self.users, self.updates = users, updates

    def train_dataloader(self):
        batch = {"user": self.users, "position": self.split.train_end[self.users].unsqueeze(1) - 1}
        return DataLoader([batch] * self.updates, batch_size=None, collate_fn=keep_batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", default="outputs/sasrec-ml-latest-small/checkpoints/best.ckpt")
    parser.add_argument("--simulator", default="outputs/simulator-ml-latest-small/checkpoints/best.ckpt")
    parser.add_argument("--config", default="configs/ppo-ml-latest-small.yaml", help="PPO settings are read from it")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--return-freed-memory", action="store_true", help="glibc's default: without the CLI's keep_freed_memory()"
    )
    args = parser.parse_args()
    if not args.return_freed_memory:
        keep_freed_memory()
    torch.set_num_threads(args.threads)
    recipe = yaml.safe_load(open(args.config))["model"]["init_args"]
    ppo = PPO(**recipe["algorithm"]["init_args"])
    behaviour = UserBehaviour(max_steps=args.steps, initial_patience=float("inf"))
    tuner = PolicyFineTuner(
        args.pretrained,
        args.simulator,
        ppo,
        behaviour,
        slate_size=recipe["slate_size"],
        context_len=50 - args.steps,
        temperature=recipe.get("temperature", 1.0),
    )
    train_users = simulated_users(args.simulator)["train"]
    users = train_users[torch.randint(len(train_users), (args.users,), generator=torch.Generator().manual_seed(0))]
    timer = Timer()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(tuner, FixedEpisodes(users, args.updates, max_len=50))
    agent = RecommenderAgent(tuner.recommender.eval(), tuner.hparams.context_len, args.steps)
    rollouts = []
    for _ in range(args.updates):
        start = time.perf_counter()
        episodes = rollout(tuner.train_simulator, agent, users, slate_size=tuner.hparams.slate_size, sample=True)
        rollouts.append(time.perf_counter() - start)
    assert episodes.valid.all(), "every user should stay all steps"
    print(
        f"PPO update ({ppo.epochs} epochs, minibatches of {ppo.minibatch_users} users) "
        f"over {args.users} users x {args.steps} steps, {args.threads} threads: "
        f"median {statistics.median(timer.seconds):.2f} s of {[round(s, 2) for s in timer.seconds]}; "
        f"rollout alone median {statistics.median(rollouts):.2f} s"
    )


if __name__ == "__main__":
    main()
