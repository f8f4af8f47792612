"""Throughput of PPO fine-tuning: rollout + update together, in simulated user-turns per second.

    python benchmarks/rl.py -c configs/sports/data.yaml -c configs/sports/ppo.yaml \
        -c configs/sports/behaviour.yaml --threads 2 \
        --model.init_args.pretrained outputs/sports/sasrec/checkpoints/best.ckpt \
        --model.init_args.simulator outputs/sports/simulator/checkpoints/best.ckpt
    python benchmarks/rl.py -c configs/ppo-ml-latest-small.yaml --threads 2     # the demo's data

The recipe files (`-c`, as for `lightning-rec fit`; any further option overrides them) give the data,
the policy, the simulator and the sizes: users per update (the training environment's share of the
recipe's batch_size windows, or --users), turns (behaviour.max_steps) and slate size. Every user stays
every turn (the behaviour is switched to NX_X: no quit rule, no patience), the worst case. Runs the
real PolicyFineTuner under a real Trainer and prints user-turns per second of a whole update (median
of --updates), its rollout alone and the load average beside it. --profile prints torch.profiler's
top operators of the updates (timed under the profiler).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time

import lightning as L
import torch
from timing import Timer
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import DataLoader

from lightning_rec.cli import RecommenderCLI
from lightning_rec.data.datasets import keep_batch
from lightning_rec.memory import keep_freed_memory
from lightning_rec.rl import RecommenderAgent, UserBehaviour, rollout
from lightning_rec.rl.simulator_artifact import simulated_users


def fixed_batches(users: torch.Tensor, ends: torch.Tensor, updates: int) -> DataLoader:
    """`updates` training batches of exactly these users at the end of their logs."""
    batch = {"user": users, "position": ends.unsqueeze(1) - 1}  # a window's last position; episodes start after it
    return DataLoader([batch] * updates, batch_size=None, collate_fn=keep_batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", action="append", required=True, help="recipe files, in order")
    parser.add_argument("--users", type=int, help="users per update (default: the recipe's)")
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--return-freed-memory", action="store_true", help="glibc's default: without the CLI's keep_freed_memory()"
    )
    args, overrides = parser.parse_known_args()
    if not args.return_freed_memory:
        keep_freed_memory()
    torch.set_num_threads(args.threads)
    sys.argv[1:] = []  # the CLI reads its arguments from `args` only
    cli = RecommenderCLI(args=[f"--config={path}" for path in args.config] + overrides, run=False)
    tuner, data = cli.model, cli.datamodule
    recipe = tuner.behaviour
    tuner.behaviour = UserBehaviour(recipe.max_steps, no_click_utility=recipe.no_click_utility, mode="NX_X")
    data.setup("fit")
    tuner.setup("fit")
    train_users = simulated_users(tuner.hparams.simulator)["train"]
    count = args.users or round(data.hparams.batch_size * len(train_users) / data.data.num_users)
    users = train_users[torch.randint(len(train_users), (count,), generator=torch.Generator().manual_seed(0))]
    data.train_dataloader = lambda: fixed_batches(users, data.split.train_end[users], args.updates)
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
    with profile(activities=[ProfilerActivity.CPU]) if args.profile else contextlib.nullcontext() as prof:
        trainer.fit(tuner, data)
    turns, slate_size = tuner.behaviour.max_steps, tuner.hparams.slate_size
    agent = RecommenderAgent(tuner.recommender.eval(), tuner.hparams.context_len, turns, tuner.hparams.temperature)
    rollouts = []
    for _ in range(args.updates):
        start = time.perf_counter()
        episodes = rollout(tuner.train_simulator, agent, users, slate_size=slate_size, sample=True)
        rollouts.append(time.perf_counter() - start)
    assert episodes.valid.all(), "every user should stay every turn"
    update, alone = statistics.median(timer.seconds), statistics.median(rollouts)
    ppo = tuner.algorithm
    print(
        f"{count} users x {turns} turns, slates of {slate_size}, {tuner.recommender.num_items} items, "
        f"PPO {ppo.epochs} epochs of minibatches of {ppo.minibatch_users} users, {args.threads} threads: "
        f"{count * turns / update:,.0f} user-turns/s (update median {update:.2f} s of "
        f"{[round(s, 2) for s in timer.seconds]}; rollout alone {alone:.2f} s); "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    if args.profile:
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))


if __name__ == "__main__":
    main()
