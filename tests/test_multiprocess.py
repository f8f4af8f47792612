"""Every stage on two processes (DDP, gloo on CPU, through the real CLI): the simulator's validation,
the RL evaluation table and the meta-test table give what one process gives, and PPO and
meta-training keep the processes' weights equal (their gradients are averaged over them)."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from test_cli import logged
from test_meta import write_group_dataset
from test_policy import EVALUATION, FINE_TUNER, RECOMMENDER, SIMULATOR, with_categories, write_taste_dataset
from test_resume import DATA, META, META_DATA

from lightning_rec.cli import main

RUN = """
seed_everything: 0
data:
  {data}
model:
  {model}
trainer:
  accelerator: cpu
  max_epochs: {epochs}
  default_root_dir: {out}
  enable_progress_bar: false
  enable_model_summary: false
  logger: {{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {{save_dir: {out}, name: csv}}}}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {out}, filename: last, monitor: null}}
    - trainers.RanksAgree
"""
TWO = ["--trainer.strategy", "ddp", "--trainer.devices", "2"]


def write_run(out, data: str, model: str, epochs: int = 1) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.yaml").write_text(RUN.format(data=data, model=model, epochs=epochs, out=out))
    return str(out / "run.yaml")


def on_two_processes(*argv: str) -> None:
    env_path = {"PYTHONPATH": str(__import__("pathlib").Path(__file__).parent)}
    command = [sys.executable, "-m", "lightning_rec.cli", *argv, *TWO]
    subprocess.run(command, check=True, timeout=300, env={**__import__("os").environ, **env_path})


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("two")
    taste = write_taste_dataset(root / "taste.csv", num_users=120)
    data = with_categories(DATA.format(data=taste, batch_size=32), taste)
    checkpoints = {}
    for name, model in (("pretrained", RECOMMENDER), ("simulator", SIMULATOR)):
        main(["fit", "-c", write_run(root / name, data, model)])
        checkpoints[name] = str(root / name / "last.ckpt")
    return root, data, checkpoints


def test_simulator_validation_on_two_processes_is_the_one_process_validation(world):
    root, data, checkpoints = world
    config = write_run(root / "simulator-validate", data, SIMULATOR)
    on_two_processes("validate", "-c", config, "--ckpt_path", checkpoints["simulator"])
    main(["validate", "-c", config, "--ckpt_path", checkpoints["simulator"]])
    for key in ("val/ndcg@10", "val/train/auc", "val/train/ece", "val/eval/ece", "val/eval/rating_rmse"):
        two, one = logged(root / "simulator-validate", key)
        assert two == pytest.approx(one, abs=1e-6), key


def test_ppo_on_two_processes_then_the_evaluation_table_is_the_one_process_table(world):
    """PPO's updates average the processes' gradients (RanksAgree); the evaluation plays its episodes
    in chunks split over the processes and prints the same table as one process."""
    root, data, checkpoints = world
    settings = "epochs: 2, minibatch_users: 16, kl_coef: 0.01, entropy_coef: 0.0, credit: slate"
    algorithm = f"{{class_path: lightning_rec.rl.PPO, init_args: {{{settings}}}}}"
    model = FINE_TUNER.format(
        pretrained=checkpoints["pretrained"],
        simulator=checkpoints["simulator"],
        algorithm=algorithm,
        lr=0.003,
        supervised_coef=0.1,
    )
    on_two_processes("fit", "-c", write_run(root / "ppo", data, model))
    tables = []
    for name in ("two", "one"):
        out = root / f"evaluation-{name}"
        evaluation = EVALUATION.format(
            simulator=checkpoints["simulator"],
            pretrained=checkpoints["pretrained"],
            ppo=root / "ppo" / "last.ckpt",
            out=out,
        )
        config = write_run(out, data, evaluation)
        on_two_processes("test", "-c", config) if name == "two" else main(["test", "-c", config])
        tables.append(pd.read_csv(out / "table.csv"))
    pd.testing.assert_frame_equal(tables[0], tables[1], rtol=1e-6)


def test_meta_training_on_two_processes_and_its_test_table(tmp_path):
    """Meta-gradients averaged over the processes (RanksAgree); the meta-test NDCG table on two
    processes is the one-process table (one of its loaders has a single task: one process gets none)."""
    source = write_group_dataset(tmp_path / "groups.csv")
    data = DATA.format(data=source.path, batch_size=32).replace("rating_col: rating", f"item_path: {source.item_path}")
    checkpoints = []
    for name, model in (("pretrained", RECOMMENDER), ("simulator", SIMULATOR)):
        main(["fit", "-c", write_run(tmp_path / name, data, model)])
        checkpoints.append(tmp_path / name / "last.ckpt")
    meta_data = META_DATA.format(path=source.path, items=source.item_path)
    model = META.format(pretrained=checkpoints[0], simulator=checkpoints[1])
    config = write_run(tmp_path / "meta", meta_data, model)
    on_two_processes("fit", "-c", config)
    tables = []
    for name in ("two", "one"):
        argv = ["test", "-c", config, "--ckpt_path", str(tmp_path / "meta" / "last.ckpt")]
        argv += [f"--trainer.default_root_dir={tmp_path / name}", "--trainer.logger=false"]
        on_two_processes(*argv) if name == "two" else main(argv)
        tables.append(pd.read_csv(tmp_path / name / "meta" / "meta_test.csv"))
    two, one = (table[table.metric != "return"].reset_index(drop=True) for table in tables)
    assert set(two.tasks) == {"cold_start/k2", "segment/held_out"}
    pd.testing.assert_frame_equal(two, one, rtol=1e-6)
    # returns: each batch of tasks plays on dice seeded once for the batch, and the batches differ
    assert (tables[0].metric == "return").sum() == (tables[1].metric == "return").sum() > 0
