"""Several `lightning-rec` commands on one pair of DDP processes (gloo): `on_two_processes` launches
this file twice with LOCAL_RANK etc. set, so Lightning joins that pair instead of spawning one per
command, and the imports and the process group are paid once for all the commands."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

TWO = ["--trainer.strategy", "ddp", "--trainer.devices", "2"]


def on_two_processes(*commands: list[str]) -> None:
    """Run the commands, in order, on a pair of DDP processes (gloo) launched once for all of them."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    runner = [
        sys.executable,
        __file__,
        json.dumps([[*c, *TWO] for c in commands]),
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "MASTER_ADDR": "127.0.0.1"}
    env |= {"MASTER_PORT": str(port), "WORLD_SIZE": "2", "NODE_RANK": "0"}
    processes = [subprocess.Popen(runner, env={**env, "LOCAL_RANK": str(rank)}) for rank in range(2)]
    codes = [process.wait(timeout=600) for process in processes]
    assert codes == [0, 0], f"exit codes {codes}"


if __name__ == "__main__":
    from lightning_rec.cli import main

    for argv in json.loads(sys.argv[1]):
        main(argv)
