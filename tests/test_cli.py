"""The `lightning-rec` command through real LightningCLI, YAML, Trainer, checkpoints and files."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from ddp_commands import on_two_processes

from lightning_rec.cli import main

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """
seed_everything: 0
data:
  class_path: lightning_rec.data.SequenceDataModule
  init_args:
    source:
      class_path: lightning_rec.data.sources.InteractionFile
      init_args: {{path: {data}, item_path: {items}}}
    max_len: 8
    batch_size: 32
    cache_dir: null
model:
  class_path: lightning_rec.stages.SequentialRecommender
  init_args:
    item_encoder:
      class_path: lightning_rec.encoders.IDItemEncoder
      init_args: {{dim: 32}}
    sequence_encoder:
      class_path: lightning_rec.encoders.TransformerEncoder
      init_args:
        dim: ${{...item_encoder.init_args.dim}}
        num_layers: 1
        max_len: ${{.....data.init_args.max_len}}
        dropout: 0.1
    lr: 0.005
    warmup_steps: 5
trainer:
  accelerator: cpu
  devices: 1
  max_epochs: {epochs}
  default_root_dir: {out}
  enable_progress_bar: false
  enable_model_summary: false
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {{save_dir: {out}, name: csv}}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{monitor: val/ndcg@10, mode: max, filename: best}}
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{filename: last, save_top_k: 1, enable_version_counter: false}}
    - class_path: lightning_rec.recommend.RecommendationWriter
      init_args: {{path: {out}/recommendations.csv}}
"""


def write_config(path: Path, data: str, out: Path, epochs: int = 20) -> str:
    path.write_text(CONFIG.format(data=data, items=data.replace(".csv", "_items.csv"), out=out, epochs=epochs))
    return str(path)


def logged(out: Path, key: str) -> list[float]:
    """Every logged value of `key` in the CSV logs under out, oldest version first."""
    values = []
    for metrics in sorted(out.glob("csv/version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1])):
        frame = pd.read_csv(metrics)
        if key in frame:
            values += frame[key].dropna().tolist()
    return values


@pytest.fixture(scope="module")
def trained(tmp_path_factory, chain_csv):
    out = tmp_path_factory.mktemp("run")
    config = write_config(out / "config.yaml", chain_csv, out)
    main(["fit", "-c", config])
    return config, out


def test_fit_writes_best_and_last_checkpoints_and_test_uses_them(trained):
    config, out = trained
    checkpoints = {p.name for p in out.glob("csv/version_*/checkpoints/*.ckpt")}
    assert checkpoints == {"best.ckpt", "last.ckpt"}
    best = next(out.glob("csv/version_*/checkpoints/best.ckpt"))
    last = torch.load(best.with_name("last.ckpt"), map_location="cpu", weights_only=False)
    assert last["epoch"] == 19  # the final epoch's weights, whether or not it validated best
    main(["test", "-c", config, "--ckpt_path", str(best)])
    assert logged(out, "test/ndcg@10")[-1] > 0.6  # chance is about 0.1 on this item chain
    assert max(logged(out, "val/ndcg@10")) > 0.6


def test_predict_writes_top_k_with_titles_and_never_history(trained, chain_csv):
    config, out = trained
    best = next(out.glob("csv/version_*/checkpoints/best.ckpt"))
    main(["predict", "-c", config, "--ckpt_path", str(best)])
    recs = pd.read_csv(out / "recommendations.csv")
    events = pd.read_csv(chain_csv)
    assert len(recs) == 10 * events["user"].nunique()
    assert set(recs["rank"]) == set(range(1, 11))
    assert (recs["title"] == "Item " + recs["item"].astype(str)).all()
    seen = set(zip(events["user"], events["item"]))
    assert not any((u, i) in seen for u, i in zip(recs["user"], recs["item"]))
    # the learned chain: the top item after a user's last item i is i + 1 (on the ring of 40)
    last = events.sort_values("timestamp").groupby("user")["item"].last()
    top = recs[recs["rank"] == 1].set_index("user")["item"]
    assert ((top - last.reindex(top.index)) % 40 == 1).mean() > 0.8


def test_recommend_prints_history_and_titles(trained, capsys):
    config, out = trained
    best = next(out.glob("csv/version_*/checkpoints/best.ckpt"))
    main(["recommend", "-c", config, "--ckpt_path", str(best), "--user", "u3", "--k", "5"])
    printed = capsys.readouterr().out
    assert "user u3" in printed and "top 5 recommendations" in printed
    assert printed.count("Item ") >= 5
    main(["recommend", "-c", config, "--ckpt_path", str(best), "--user", "stranger"])
    assert "most popular" in capsys.readouterr().out


def test_wrong_config_key_is_named(tmp_path, chain_csv, capsys):
    config = write_config(tmp_path / "c.yaml", chain_csv, tmp_path)
    text = Path(config).read_text().replace("batch_size: 32", "batch_sise: 32")
    Path(config).write_text(text)
    with pytest.raises(SystemExit):
        main(["fit", "-c", config])
    assert "batch_sise" in capsys.readouterr().err


def test_print_config_resolves_interpolation(tmp_path, chain_csv, capsys):
    config = write_config(tmp_path / "c.yaml", chain_csv, tmp_path)
    with pytest.raises(SystemExit):
        main(["fit", "-c", config, "--model.init_args.item_encoder.init_args.dim", "24", "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    encoder = printed["model"]["init_args"]["sequence_encoder"]
    assert encoder["class_path"] == "lightning_rec.encoders.TransformerEncoder"
    assert encoder["init_args"]["dim"] == 24 and encoder["init_args"]["max_len"] == 8


def test_ddp_on_two_cpu_processes_gives_the_single_process_test_metrics(tmp_path, chain_csv):
    """Real DDP (gloo, 2 processes): fit, then test the same checkpoint with 2 processes and with 1."""
    config = write_config(tmp_path / "c.yaml", chain_csv, tmp_path, epochs=3)
    last = str(tmp_path / "csv" / "version_0" / "checkpoints" / "last.ckpt")
    on_two_processes(["fit", "-c", config], ["test", "-c", config, "--ckpt_path", last])
    main(["test", "-c", config, "--ckpt_path", last])
    for key in ("test/ndcg@10", "test/recall@10", "test/mrr@20", "test/coverage@10"):
        two, one = logged(tmp_path, key)[-2:]
        assert two == pytest.approx(one, abs=1e-6), key


def test_wandb_goes_offline_without_credentials(monkeypatch, tmp_path):
    from lightning_rec.cli import use_wandb_offline_without_key

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    use_wandb_offline_without_key()
    assert os.environ["WANDB_MODE"] == "offline"
    monkeypatch.delenv("WANDB_MODE")
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password key\n")
    use_wandb_offline_without_key()
    assert "WANDB_MODE" not in os.environ  # logged in: leave W&B online


def test_the_terminal_has_no_known_harmless_lines_of_other_libraries(tmp_path, chain_csv, caplog, recwarn, capfd):
    """Advertisements, absent-accelerator lines and known deprecation/user warnings are filtered at
    their source (lightning_rec/quiet.py); the project's own lines and Lightning's results stay."""
    from lightning_rec.quiet import HARMLESS_LOG_LINES

    config = write_config(tmp_path / "c.yaml", chain_csv, tmp_path, epochs=1)
    main(["fit", "-c", config])
    main(["test", "-c", config, "--ckpt_path", str(next(tmp_path.glob("csv/version_*/checkpoints/last.ckpt")))])
    printed = capfd.readouterr()
    lines = [record.getMessage() for record in caplog.records] + (printed.out + printed.err).splitlines()
    assert not [line for line in lines if any(part in line for part in HARMLESS_LOG_LINES)]
    assert not [str(w.message) for w in recwarn if "LeafSpec" in str(w.message) or "dirpath" in str(w.message)]
    assert "Test metric" in printed.out and "Seed set to 0" in " ".join(lines)


def test_two_seeded_pretraining_runs_are_bit_identical(tmp_path, chain_csv):
    """seed_everything plus torch's deterministic algorithms (on by default in the CLI): the same recipe
    twice gives the same validation metrics and the same weights, bit for bit (docs/quickstart.md)."""
    torch.use_deterministic_algorithms(False)
    runs = []
    for name, seed in (("a", "0"), ("b", "0"), ("other_seed", "1")):
        out = tmp_path / name
        config = write_config(tmp_path / f"{name}.yaml", chain_csv, out, epochs=3)
        main(["fit", "-c", config, "--seed_everything", seed])
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        state = torch.load(next(out.glob("csv/version_*/checkpoints/last.ckpt")), weights_only=False)["state_dict"]
        runs.append((logged(out, "val/ndcg@10"), logged(out, "val/recall@10"), state))
    (ndcg_a, recall_a, state_a), (ndcg_b, recall_b, state_b), (ndcg_other, _, state_other) = runs
    assert len(ndcg_a) == 3 and ndcg_a == ndcg_b and recall_a == recall_b
    assert state_a.keys() == state_b.keys() and all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert ndcg_other != ndcg_a and not torch.equal(
        state_other["sequence_encoder.norm.weight"], state_a["sequence_encoder.norm.weight"]
    )


def test_the_generic_recipe_fits_a_users_csv_given_only_its_path_and_stops_after_the_peak(
    tmp_path, chain_csv, monkeypatch
):
    """configs/sasrec.yaml on an events file (user, item, timestamp) with nothing else given: it
    trains, and EarlyStopping ends the run `patience` validations after the best one, whose weights
    are best.ckpt (the chain data peaks at NDCG@10 1 long before the 200-epoch limit)."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("HOME", str(tmp_path))  # the data cache's default folder
    out = tmp_path / "run"
    main(
        [
            "fit",
            "-c",
            str(ROOT / "configs/sasrec.yaml"),
            "--data.init_args.source.init_args.path",
            chain_csv,
            "--trainer.default_root_dir",
            str(out),
        ]
    )
    last, best = (torch.load(out / "checkpoints" / f"{name}.ckpt", weights_only=False) for name in ("last", "best"))
    (stopping,) = (state for key, state in last["callbacks"].items() if key.startswith("EarlyStopping"))
    assert 0 < stopping["stopped_epoch"] < 199 and stopping["wait_count"] == 5
    assert best["epoch"] == last["epoch"] - 5
    assert float(stopping["best_score"]) == pytest.approx(1.0)


def test_the_generic_hybrid_recipe_runs_after_the_generic_encode_stage_on_a_users_files(
    tmp_path, chain_csv, monkeypatch
):
    """configs/encode.yaml then configs/hybrid-sasrec.yaml, given only the events and item files (and
    a tiny language model in place of all-MiniLM-L6-v2): the cache lands where the hybrid reads it,
    and the fit ends early with a best checkpoint of the hybrid encoder."""
    from tiny_plm import save_tiny_bert

    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("HOME", str(tmp_path))
    bert = save_tiny_bert(tmp_path / "bert")
    monkeypatch.chdir(tmp_path)  # the recipes' outputs/ folders
    files = ["--data.init_args.source.init_args.path", chain_csv,
             "--data.init_args.source.init_args.item_path", chain_csv.replace(".csv", "_items.csv")]  # fmt: skip
    main(["predict", "-c", str(ROOT / "configs/encode.yaml"), *files, "--model.init_args.model_name", bert])
    assert (tmp_path / "outputs/embeddings/items-minilm.safetensors").is_file()
    main(["fit", "-c", str(ROOT / "configs/hybrid-sasrec.yaml"), *files])
    best = torch.load(tmp_path / "outputs/hybrid-sasrec/checkpoints/best.ckpt", weights_only=False)
    assert best["hyper_parameters"]["item_encoder"]["class_path"].endswith("HybridItemEncoder")
    last = torch.load(tmp_path / "outputs/hybrid-sasrec/checkpoints/last.ckpt", weights_only=False)
    (stopping,) = (state for key, state in last["callbacks"].items() if key.startswith("EarlyStopping"))
    assert stopping["stopped_epoch"] > 0 and best["epoch"] == last["epoch"] - 5
