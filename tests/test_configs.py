"""Every YAML file in configs/ parses: each recipe through the command its header gives (with
--print_config, the real LightningCLI), each component file composed as the README shows, and every
fragment through a recipe that includes it. A recipe whose header command, class path, key or
included file is wrong fails here, not on a user's machine."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from lightning_rec.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SUBCOMMANDS = ("fit", "validate", "test", "predict")
DATA = "configs/data/ml-latest-small.yaml"


def header_commands(path: Path) -> list[list[str]]:
    """The comment lines of a file that are `lightning-rec <subcommand> ...` commands (after any
    environment variables; backslash continuations joined)."""
    comments = "\n".join(line.lstrip("#").strip() for line in path.read_text().splitlines() if line.startswith("#"))
    commands = []
    for line in comments.replace("\\\n", " ").splitlines():
        words = shlex.split(line) if re.match(r"(\w+=\S+\s+)*lightning-rec\s", line) else []
        words = words[[word == "lightning-rec" for word in words].index(True) + 1 :] if words else []
        if words and words[0] in SUBCOMMANDS:
            commands.append(words)
    return commands


def composed_commands() -> list[list[str]]:
    """The README's composition: a data file, a model, a trainer and a logger."""

    def compose(model: str, trainer: str = "cpu", logger: str = "csv") -> list[str]:
        parts = [f"configs/model/{model}.yaml", f"configs/trainer/{trainer}.yaml", f"configs/logger/{logger}.yaml"]
        return ["fit", "--data", DATA, *(arg for part in parts for arg in ("-c", part))]

    models = sorted(path.stem for path in (CONFIGS / "model").glob("*.yaml"))
    trainers = sorted(path.stem for path in (CONFIGS / "trainer").glob("*.yaml"))
    loggers = sorted(path.stem for path in (CONFIGS / "logger").glob("*.yaml"))
    return (
        [compose(model) for model in models]
        + [compose("sasrec", trainer) for trainer in trainers]
        + [compose("sasrec", logger=logger) for logger in loggers]
    )


COMMANDS = {" ".join(words): words for path in sorted(CONFIGS.rglob("*.yaml")) for words in header_commands(path)}
COMMANDS.update({" ".join(words): words for words in composed_commands()})


def named_files(words: list[str]) -> set[Path]:
    """The config files a command reads: its -c / --data arguments and, in turn, every file those
    include by path (relative to the including file)."""
    given = [Path(value) for flag, value in zip(words, words[1:]) if flag in ("-c", "--config", "--data")]
    found, pending = set(), [ROOT / path for path in given]
    while pending:
        path = pending.pop().resolve()
        if path in found:
            continue
        found.add(path)
        body = "\n".join(line.split("#")[0] for line in path.read_text().splitlines())
        pending += [path.parent / name for name in re.findall(r"[\w./-]+\.yaml", body)]
    return found


def resolved(command: list[str], monkeypatch, capsys) -> dict:
    """The configuration a header command runs (--print_config), read back."""
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as stop:
        main([*command, "--print_config"])
    assert stop.value.code in (0, None), capsys.readouterr().err[-2000:]
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("command", sorted(COMMANDS), ids=lambda command: command.replace("configs/", "")[:80])
def test_each_recipe_parses_through_its_own_command(command, monkeypatch, capsys):
    words = COMMANDS[command]
    config = resolved(words, monkeypatch, capsys)
    assert config["model"]["class_path"] and config["data"]["class_path"]
    for path in named_files(words):
        assert path.is_file(), f"{command}: {path} does not exist"


def test_every_config_file_is_read_by_some_command():
    read = set().union(*(named_files(words) for words in COMMANDS.values()))
    unread = sorted(str(path.relative_to(ROOT)) for path in CONFIGS.rglob("*.yaml") if path.resolve() not in read)
    assert not unread, f"no header command or recipe reads {unread}: give each file a command or include it"


def test_sports_ppo_and_evaluation_play_the_nx0_user_fixed_before_training(monkeypatch, capsys):
    for recipe in ("ppo", "evaluation"):
        (command,) = header_commands(CONFIGS / "sports" / f"{recipe}.yaml")
        config = resolved(command, monkeypatch, capsys)
        behaviour = config["model"]["init_args"]["behaviour"]["init_args"]
        assert behaviour["mode"] == "NX_0" and behaviour["max_steps"] == 30
        assert (behaviour["quit"]["window"], behaviour["quit"]["threshold"]) == (4, 0)
        assert config["data"]["init_args"]["category"]["column"] == "attributes"
        assert config["data"]["init_args"]["source"]["init_args"]["path"].startswith("../shared/data/amazon-sports/")
