"""Crash and resume, every stage: a run that dies mid-epoch and is resumed with `fit --ckpt_path last`
ends with the weights and optimiser state of the run that was never interrupted, bit for bit
(lightning_rec/resume.py: the batches are a function of (seed, epoch, batch), and the RNGs and the
stages' own generators travel in the checkpoints)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_meta import write_group_dataset
from test_policy import FINE_TUNER, RECOMMENDER, SIMULATOR, write_taste_dataset
from trainers import INTERACTIONS, Crash, run_config

from lightning_rec.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

IN_EPOCH = """    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {out}, filename: last-in-epoch, every_n_train_steps: {every}}}
"""
CRASH = """
    - class_path: trainers.CrashAt
      init_args: {{batch: {batch}, kill: {kill}}}
"""


def write_run(out: Path, data: str, model: str, epochs: int, every: int, crash: int | None = None, kill=False) -> str:
    out.mkdir(parents=True, exist_ok=True)
    text = run_config(data, model, out, epochs, callbacks=IN_EPOCH.format(out=out, every=every))
    if crash is not None:
        text += CRASH.format(batch=crash, kill=str(kill).lower())
    config = out / ("crash.yaml" if crash is not None else "run.yaml")
    config.write_text(text)
    return str(config)


def final_state(out: Path) -> dict:
    checkpoint = torch.load(out / "last.ckpt", map_location="cpu", weights_only=False)
    return {"weights": checkpoint["state_dict"], "optimizers": checkpoint["optimizer_states"]}


def assert_identical(a, b, where: str = "") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}/{index}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def crash_and_resume(root: Path, data: str, model: str, epochs: int, every: int, crash: int, kill=False) -> None:
    """The run uninterrupted, the run crashed after `crash` batches and resumed from its newest
    checkpoint (`last`): the same final state."""
    main(["fit", "-c", write_run(root / "whole", data, model, epochs, every)])
    crashed = root / "crashed"
    config = write_run(crashed, data, model, epochs, every, crash, kill)
    if kill:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}  # as one_thread
        run = [sys.executable, "-c", "from lightning_rec.cli import main; main()", "fit", "-c", config]
        assert subprocess.run(run, env=env, timeout=300).returncode == -9
    else:
        with pytest.raises(Crash):
            main(["fit", "-c", config])
    resumed_from = torch.load(crashed / "last-in-epoch.ckpt", weights_only=False)
    assert 0 < resumed_from["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["processed"]  # mid-epoch
    main(["fit", "-c", write_run(crashed, data, model, epochs, every), "--ckpt_path", "last"])
    assert_identical(final_state(root / "whole"), final_state(crashed))


@pytest.fixture(scope="module")
def taste(tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("resume")
    return root, write_taste_dataset(root / "taste.csv", num_users=120)


@pytest.mark.parametrize("kill", [False, True], ids=["crash", "kill-9"])
def test_pretraining_resumes_mid_epoch_as_if_never_stopped(taste, tmp_path, kill):
    """Dropout on: killed after batch 11 (in the second epoch), resumed from the checkpoint of batch 9."""
    _, data = taste
    crash_and_resume(
        tmp_path, INTERACTIONS.format(data=data, batch_size=16), RECOMMENDER, epochs=3, every=3, crash=11, kill=kill
    )


def test_simulator_training_resumes_mid_epoch_as_if_never_stopped(taste, tmp_path):
    _, data = taste
    crash_and_resume(tmp_path, INTERACTIONS.format(data=data, batch_size=16), SIMULATOR, epochs=2, every=3, crash=10)


@pytest.fixture(scope="module")
def taste_checkpoints(taste) -> tuple[str, str]:
    root, data = taste
    checkpoints = []
    for name, model in (("pretrained", RECOMMENDER), ("simulator", SIMULATOR)):
        main(
            [
                "fit",
                "-c",
                write_run(root / name, INTERACTIONS.format(data=data, batch_size=32), model, epochs=1, every=100),
            ]
        )
        checkpoints.append(str(root / name / "last.ckpt"))
    return tuple(checkpoints)


def test_ppo_resumes_mid_epoch_with_its_policy_and_simulator_dice(taste, taste_checkpoints, tmp_path):
    """4 PPO epochs of 1 minibatch per batch of 32 windows (4 optimiser steps a batch): the sampled slates
    and the simulated clicks after the resume are the uninterrupted run's."""
    _, data = taste
    pretrained, simulator = taste_checkpoints
    settings = "epochs: 4, minibatch_users: 64, kl_coef: 0.01, entropy_coef: 0.01, credit: slate"
    model = FINE_TUNER.format(
        pretrained=pretrained,
        simulator=simulator,
        algorithm=f"{{class_path: lightning_rec.rl.PPO, init_args: {{{settings}}}}}",
        lr=0.003,
        supervised_coef=0.1,
    )
    crash_and_resume(tmp_path, INTERACTIONS.format(data=data, batch_size=32), model, epochs=2, every=8, crash=5)


META_DATA = """class_path: lightning_rec.meta.MetaDataModule
  init_args:
    source: {{class_path: lightning_rec.data.sources.InteractionFile, init_args: {{path: {path}, item_path: {items}}}}}
    cache_dir: null
    max_len: 12
    num_segments: 4
    held_out_segments: 1
    train_ks: [1, 2]
    test_ks: [2]
    val_k: 2
    num_query: 3
    tasks_per_batch: 8
    segment_tasks_per_epoch: 48
    support_windows: 3
    segment_window: 6
    segment_query: 4"""
META = """class_path: lightning_rec.stages.meta_training.MetaPolicyOptimizer
  init_args:
    checkpoint: {pretrained}
    head: lightning_rec.meta.UserHead
    adapt: head
    inner_steps: 1
    inner_lr: 0.1
    inner_loss: policy_gradient
    curve_steps: 1
    environment:
      class_path: lightning_rec.meta.task_environment.TaskEnvironment
      init_args: {{checkpoint: {simulator}, slate_size: 3, episodes: 4}}"""


def test_meta_training_resumes_mid_epoch_with_its_tasks_and_episodes(tmp_path):
    """Cold-start and segment tasks (drawn at random by their datasets) and policy-gradient inner
    loops played in the simulator: all of it resumes where it stopped."""
    source = write_group_dataset(tmp_path / "groups.csv")
    data = INTERACTIONS.format(data=source.path, batch_size=32).replace(
        "rating_col: rating", f"item_path: {source.item_path}"
    )
    checkpoints = []
    for name, model in (("pretrained", RECOMMENDER), ("simulator", SIMULATOR)):
        main(["fit", "-c", write_run(tmp_path / name, data, model, epochs=1, every=100)])
        checkpoints.append(tmp_path / name / "last.ckpt")
    meta_data = META_DATA.format(path=source.path, items=source.item_path)
    model = META.format(pretrained=checkpoints[0], simulator=checkpoints[1])
    crash_and_resume(tmp_path / "meta", meta_data, model, epochs=2, every=2, crash=7)


@pytest.mark.parametrize("steps", [3, 7], ids=["before-the-first-validation", "after-the-last-validation"])
def test_the_latest_checkpoint_is_written_when_fit_stops_between_validations(taste, tmp_path, steps):
    """configs/callbacks/last.yaml: Lightning's own would save at step 5 only (none at all for a
    3-step run); the weights of the last steps are in last.ckpt."""
    _, data = taste
    last = Path(__file__).parents[1] / "configs" / "callbacks" / "last.yaml"
    config = tmp_path / "run.yaml"
    data_block = INTERACTIONS.format(data=data, batch_size=16)
    config.write_text(run_config(data_block, RECOMMENDER, tmp_path, epochs=-1, callbacks=f"    - {last}\n"))
    stops_between_validations = ["--trainer.max_steps", str(steps), "--trainer.val_check_interval", "5"]
    stops_between_validations += ["--trainer.check_val_every_n_epoch", "null", "--trainer.num_sanity_val_steps", "0"]
    main(["fit", "-c", str(config), *stops_between_validations])
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == steps
