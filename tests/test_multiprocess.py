"""Every stage on two processes (DDP, gloo on CPU, through the real CLI): the simulator's validation,
the RL evaluation table and the meta-test table give what one process gives, and PPO and
meta-training keep the processes' weights equal (their gradients are averaged over them)."""

from __future__ import annotations

import pandas as pd
import pytest
from ddp_commands import on_two_processes
from test_cli import logged
from test_meta import write_group_dataset
from test_policy import EVALUATION, FINE_TUNER, RECOMMENDER, SIMULATOR, with_categories, write_taste_dataset
from test_resume import META, META_DATA
from trainers import INTERACTIONS, run_config

from lightning_rec.cli import main

CSV_LOGGER = "{{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {{save_dir: {out}, name: csv}}}}"


def write_run(out, data: str, model: str, epochs: int = 1) -> str:
    out.mkdir(parents=True, exist_ok=True)
    logger = CSV_LOGGER.format(out=out)
    (out / "run.yaml").write_text(run_config(data, model, out, epochs, logger, callbacks="    - trainers.RanksAgree\n"))
    return str(out / "run.yaml")


def fit_checkpoints(root, data: str) -> dict[str, str]:
    """A pretrained recommender and a simulator, one epoch each, on one process."""
    checkpoints = {}
    for name, model in (("pretrained", RECOMMENDER), ("simulator", SIMULATOR)):
        main(["fit", "-c", write_run(root / name, data, model)])
        checkpoints[name] = str(root / name / "last.ckpt")
    return checkpoints


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Every stage's two-process commands, in one launch: the simulator's validation, PPO fit, the
    evaluation table of that policy, meta fit and meta-test."""
    root = tmp_path_factory.mktemp("two")
    taste = write_taste_dataset(root / "taste.csv", num_users=120)
    data = with_categories(INTERACTIONS.format(data=taste, batch_size=32), taste)
    checkpoints = fit_checkpoints(root / "taste", data)
    settings = "epochs: 2, minibatch_users: 16, kl_coef: 0.01, entropy_coef: 0.0, credit: slate"
    ppo = FINE_TUNER.format(
        pretrained=checkpoints["pretrained"],
        simulator=checkpoints["simulator"],
        algorithm=f"{{class_path: lightning_rec.rl.PPO, init_args: {{{settings}}}}}",
        lr=0.003,
        supervised_coef=0.1,
    )
    evaluation = {
        name: write_run(
            root / f"evaluation-{name}",
            data,
            EVALUATION.format(
                simulator=checkpoints["simulator"],
                pretrained=checkpoints["pretrained"],
                ppo=root / "ppo" / "last.ckpt",
                out=root / f"evaluation-{name}",
            ),
        )
        for name in ("two", "one")
    }
    groups = write_group_dataset(root / "groups.csv")
    group_data = INTERACTIONS.format(data=groups.path, batch_size=32).replace(
        "rating_col: rating", f"item_path: {groups.item_path}"
    )
    group_checkpoints = fit_checkpoints(root / "groups", group_data)
    meta = write_run(
        root / "meta",
        META_DATA.format(path=groups.path, items=groups.item_path),
        META.format(pretrained=group_checkpoints["pretrained"], simulator=group_checkpoints["simulator"]),
    )
    meta_test = {
        name: ["test", "-c", meta, "--ckpt_path", str(root / "meta" / "last.ckpt"), "--trainer.logger=false"]
        + [f"--trainer.default_root_dir={root / f'meta-{name}'}"]
        for name in ("two", "one")
    }
    simulator = write_run(root / "simulator-validate", data, SIMULATOR)
    validate = ["validate", "-c", simulator, "--ckpt_path", checkpoints["simulator"]]
    on_two_processes(
        validate,
        ["fit", "-c", write_run(root / "ppo", data, ppo)],
        ["test", "-c", evaluation["two"]],
        ["fit", "-c", meta],
        meta_test["two"],
    )
    return {"root": root, "validate": validate, "evaluation": evaluation["one"], "meta_test": meta_test["one"]}


def test_simulator_validation_on_two_processes_is_the_one_process_validation(runs):
    main(runs["validate"])
    for key in ("val/ndcg@10", "val/train/auc", "val/train/ece", "val/eval/ece", "val/eval/rating_rmse"):
        two, one = logged(runs["root"] / "simulator-validate", key)
        assert two == pytest.approx(one, abs=1e-6), key


def test_ppo_on_two_processes_then_the_evaluation_table_is_the_one_process_table(runs):
    """PPO's updates averaged the processes' gradients (RanksAgree passed); the evaluation played its
    episodes in chunks split over the processes and wrote the table one process writes."""
    main(["test", "-c", runs["evaluation"]])
    root = runs["root"]
    two, one = (pd.read_csv(root / f"evaluation-{name}" / "table.csv") for name in ("two", "one"))
    pd.testing.assert_frame_equal(two, one, rtol=1e-6)


def test_meta_training_on_two_processes_and_its_test_table(runs):
    """Meta-gradients averaged over the processes (RanksAgree passed); the meta-test table (NDCG and
    returns) on two processes is the one-process table (its held-out loader has one task: one process gets none)."""
    main(runs["meta_test"])
    tables = [pd.read_csv(runs["root"] / f"meta-{name}" / "meta" / "meta_test.csv") for name in ("two", "one")]
    two, one = tables
    assert set(two.tasks) == {"cold_start/k2", "segment/held_out"} and (two.metric == "return").sum() > 0
    pd.testing.assert_frame_equal(two, one, rtol=1e-6)  # returns too: each task's episodes play on keyed dice
