"""Beyond one machine (docs/scale.md): the FSDP recipes and a two-node launch, through the real CLI
on CPU processes (gloo). configs/trainer/fsdp-cpu.yaml (FSDP2 through ModelParallelStrategy) trains
with each process holding half of the item table and its checkpoint tests alike on two processes
and on one; configs/trainer/fsdp.yaml (FSDPStrategy) refuses the CPU with Lightning's message and
trains only where there are GPUs; two torchrun nodes of one process each train one run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ddp_commands import on_two_nodes, on_two_processes
from test_cli import logged
from trainers import INTERACTIONS, run_config

from lightning_rec.cli import main

ROOT = Path(__file__).resolve().parents[1]
FSDP_CPU = str(ROOT / "configs" / "trainer" / "fsdp-cpu.yaml")
FSDP_GPU = str(ROOT / "configs" / "trainer" / "fsdp.yaml")
DDP = str(ROOT / "configs" / "trainer" / "ddp.yaml")
SASREC = """class_path: lightning_rec.stages.SequentialRecommender
  init_args:
    item_encoder: {class_path: lightning_rec.encoders.IDItemEncoder, init_args: {dim: 16}}
    sequence_encoder:
      class_path: lightning_rec.encoders.TransformerEncoder
      init_args: {dim: 16, num_layers: 2, max_len: 12, dropout: 0.1}
    lr: 0.01
    warmup_steps: 1"""
CSV_LOGGER = "{{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {{save_dir: {out}, name: csv}}}}"
METRICS = ("test/ndcg@10", "test/recall@10", "test/mrr@20")


def write_run(out: Path, data: str, callbacks: str = "") -> str:
    """A tiny SASRec run on `data` that logs to CSV and keeps out/last.ckpt; no devices or strategy
    of its own (the trainer recipe before it on the command line gives them)."""
    out.mkdir(parents=True, exist_ok=True)
    yaml = run_config(INTERACTIONS.format(data=data, batch_size=32), SASREC, out, 2, CSV_LOGGER.format(out=out))
    (out / "run.yaml").write_text(yaml + callbacks)
    return str(out / "run.yaml")


def test_fsdp_cpu_recipe_trains_sharded_and_its_checkpoint_tests_alike_on_one_process(tmp_path, chain_csv, capfd):
    run = write_run(tmp_path, chain_csv, callbacks="    - trainers.HoldsItemTableShard\n")
    last = str(tmp_path / "last.ckpt")
    on_two_processes(
        ["fit", "-c", FSDP_CPU, "-c", run], ["test", "-c", FSDP_CPU, "-c", run, "--ckpt_path", last], extra=[]
    )
    printed = capfd.readouterr().out
    assert "rank 0 holds 21 of 41 item rows" in printed and "rank 1 holds 20 of 41 item rows" in printed
    checkpoint = torch.load(last, weights_only=False)
    assert checkpoint["state_dict"]["item_encoder.embedding.weight"].shape == (41, 16)  # whole, not a shard
    main(["test", "-c", run, "--ckpt_path", last])
    for key in METRICS:
        two, one = logged(tmp_path, key)[-2:]
        assert two == pytest.approx(one, abs=1e-6), key
    assert logged(tmp_path, "test/ndcg@10")[-1] > 0.2  # it learned the item ring (chance: about 0.07)


def test_fsdp_gpu_recipe_refuses_the_cpu_with_lightnings_message(tmp_path, chain_csv, capsys):
    """What configs/trainer/fsdp-cpu.yaml exists for: FSDPStrategy (torch's FSDP1) does not run on CPU."""
    run = write_run(tmp_path, chain_csv)
    with pytest.raises(SystemExit) as stop:
        main(["fit", "-c", FSDP_GPU, "-c", run, "--trainer.accelerator", "cpu", "--trainer.devices", "2"])
    assert stop.value.code == 1
    assert "The strategy `fsdp` requires a GPU accelerator" in capsys.readouterr().err


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="configs/trainer/fsdp.yaml (FSDPStrategy, bf16) needs GPUs; this machine has none "
    "(on CPU processes the FSDP recipe is configs/trainer/fsdp-cpu.yaml, tested above)",
)
def test_fsdp_gpu_recipe_trains_on_the_gpus(tmp_path, chain_csv):
    run = write_run(tmp_path, chain_csv)
    main(["fit", "-c", FSDP_GPU, "-c", run, "--trainer.accelerator", "gpu"])
    assert (tmp_path / "last.ckpt").is_file()


def test_two_torchrun_nodes_train_one_run_of_world_size_two(tmp_path, chain_csv, capfd):
    """docs/scale.md's multi-node launch on the loopback: two torchrun launches (node_rank 0 and 1, one
    process each) join one DDP run through Lightning's TorchElasticEnvironment, and their weights agree."""
    run = write_run(tmp_path, chain_csv, callbacks="    - trainers.ReportsWorld\n    - trainers.RanksAgree\n")
    on_two_nodes(["fit", "-c", DDP, "-c", run, "--trainer.accelerator", "cpu"])
    printed = capfd.readouterr().out
    for rank in (0, 1):
        assert f"rank {rank} of 2 (TorchElasticEnvironment)" in printed
    assert (tmp_path / "last.ckpt").is_file() and logged(tmp_path, "val/ndcg@10")
