"""The Sports recipe set: every command its headers give parses through the real CLI (no data is read),
and the PPO and evaluation runs share the NX_0 user whose quit rule was fixed before any training."""

from __future__ import annotations

import contextlib
import io
import shlex
from pathlib import Path

import pytest
import yaml

from lightning_rec.cli import main

RECIPES = sorted(Path("configs/sports").glob("*.yaml"))


def header_commands(path: Path) -> list[list[str]]:
    """The `lightning-rec ...` commands of a recipe's header comment (continuation lines joined)."""
    text = "\n".join(line[1:].strip() for line in path.read_text().splitlines() if line.startswith("#"))
    text = text.replace("\\\n", " ")
    return [shlex.split(line)[1:] for line in text.splitlines() if line.startswith("lightning-rec ")]


def resolved(command: list[str]) -> dict:
    """The configuration the CLI would run (--print_config), without running it or reading a checkpoint."""
    if "--ckpt_path" in command:
        at = command.index("--ckpt_path")
        command = command[:at] + command[at + 2 :]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main([*command, "--print_config"])
    return yaml.safe_load(out.getvalue())


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_header_command_parses(path):
    commands = header_commands(path)
    assert commands or path.stem == "behaviour", f"{path} gives no command"
    for command in commands:
        config = resolved(command)
        source = config["data"]["init_args"]["source"]["init_args"]
        assert source["path"] == "../shared/data/amazon-sports/Sports_and_Outdoors.txt"


def test_ppo_and_evaluation_play_the_same_nx0_user():
    (ppo,) = header_commands(Path("configs/sports/ppo.yaml"))
    (evaluation,) = header_commands(Path("configs/sports/evaluation.yaml"))
    for config in (resolved(ppo), resolved(evaluation)):
        behaviour = config["model"]["init_args"]["behaviour"]["init_args"]
        assert behaviour["mode"] == "NX_0" and behaviour["max_steps"] == 30
        assert (behaviour["quit"]["window"], behaviour["quit"]["threshold"]) == (4, 0)
        assert config["data"]["init_args"]["category"]["column"] == "attributes"
