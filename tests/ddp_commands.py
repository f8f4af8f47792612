"""Several `lightning-rec` commands on one pair of processes (gloo): `on_two_processes` launches this
file twice with LOCAL_RANK etc. set, so Lightning joins that pair instead of spawning one per
command, and the imports and the process group are paid once for all the commands. `on_two_nodes`
launches it through torchrun as two one-process nodes on the loopback (Lightning's
TorchElasticEnvironment). Either way the processes import this checkout's lightning_rec."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

TWO = ["--trainer.strategy", "ddp", "--trainer.devices", "2"]
TESTS = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def environment() -> dict[str, str]:
    """This process's environment, with the tests and the checkout first on the import path."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)])}


def on_two_processes(*commands: list[str], extra: list[str] = TWO) -> None:
    """Run the commands, in order, on a pair of processes (gloo) launched once for all of them;
    `extra` arguments are appended to each (default: DDP on two devices; [] where the commands
    bring their own strategy, as configs/trainer/fsdp-cpu.yaml does)."""
    runner = [sys.executable, __file__, json.dumps([[*c, *extra] for c in commands])]
    env = environment() | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    env |= {"WORLD_SIZE": "2", "NODE_RANK": "0"}
    processes = [subprocess.Popen(runner, env={**env, "LOCAL_RANK": str(rank)}) for rank in range(2)]
    codes = [process.wait(timeout=600) for process in processes]
    assert codes == [0, 0], f"exit codes {codes}"


def on_two_nodes(*commands: list[str]) -> None:
    """Run the commands on two torchrun "nodes" of one process each, as docs/scale.md launches a
    multi-node run (`--trainer.num_nodes 2 --trainer.devices 1` appended to each command)."""
    port, nodes = free_port(), ["--trainer.num_nodes", "2", "--trainer.devices", "1"]
    script = [__file__, json.dumps([[*c, *nodes] for c in commands])]
    launches = [
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(rank)]
        + ["--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port), *script]
        for rank in range(2)
    ]
    env = {key: value for key, value in environment().items() if key not in ("LOCAL_RANK", "WORLD_SIZE", "RANK")}
    processes = [subprocess.Popen(launch, env=env) for launch in launches]
    codes = [process.wait(timeout=600) for process in processes]
    assert codes == [0, 0], f"exit codes {codes}"


if __name__ == "__main__":
    from lightning_rec.cli import main

    for argv in json.loads(sys.argv[1]):
        main(argv)
