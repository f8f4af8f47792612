"""Speed of one meta-training step with the policy-gradient inner loss, with and without the cached
body states, in the same run.

    python benchmarks/meta_inner.py --steps 3

Builds the meta-learning recipe (configs/meta-ml-latest-small.yaml + configs/meta-env-ml-latest-small.yaml:
FOMAML, UserHead, segment tasks adapted by REINFORCE in the simulator) through the real CLI and
trains it under a real Trainer twice from the same start: once as it runs (`adapt: head` reuses the
recommender's states: rollouts keep them, the inner REINFORCE steps run only the head on them), once
with the inner loop encoding every history again (what it did before). Prints the median seconds
per meta-step of each and their ratio. Needs the checkpoints the recipes name.
"""

from __future__ import annotations

import argparse
import statistics

import lightning as L
import torch
from timing import Timer

from lightning_rec.cli import RecommenderCLI, use_wandb_offline_without_key

RECIPES = ["-c", "configs/meta-ml-latest-small.yaml", "-c", "configs/meta-env-ml-latest-small.yaml"]


class EncodeEveryHistory(L.Callback):
    """The peer: the inner loop as it was before the cache (the body run on every history)."""

    def on_train_start(self, trainer, module):
        module.inner.head_only = False


def meta_steps(overrides: list[str], steps: int, peer: bool) -> list[float]:
    """Seconds of each of `steps` meta-training steps of the recipe (plus `overrides`)."""
    L.seed_everything(0)
    cli = RecommenderCLI(args=[*RECIPES, *overrides], run=False)
    timer = Timer()
    callbacks = [timer, EncodeEveryHistory()] if peer else [timer]
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        callbacks=callbacks,
    )
    trainer.fit(cli.model, cli.datamodule)
    return timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="meta-steps timed per variant (the first one included)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--segment-tasks", type=int, default=1000, help="segment tasks per epoch (the recipe has none)")
    args, overrides = parser.parse_known_args()
    torch.set_num_threads(args.threads)
    use_wandb_offline_without_key()
    overrides = [
        "--data.init_args.segment_tasks_per_epoch",
        str(args.segment_tasks),
        "--model.init_args.inner_loss",
        "policy_gradient",
        *overrides,
    ]
    cached = meta_steps(overrides, args.steps, peer=False)
    encoded = meta_steps(overrides, args.steps, peer=True)
    print(
        f"seconds per meta-step, cached states: {[round(s, 1) for s in cached]}, median {statistics.median(cached):.1f}"
    )
    print(
        f"seconds per meta-step, every history encoded again: {[round(s, 1) for s in encoded]}, "
        f"median {statistics.median(encoded):.1f}"
    )
    print(f"speed-up: {statistics.median(encoded) / statistics.median(cached):.2f}x")


if __name__ == "__main__":
    main()
