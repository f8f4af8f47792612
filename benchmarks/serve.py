"""Load benchmark of `lightning-rec serve`: latency and throughput from a second process on loopback.

    python benchmarks/serve.py -c configs/hybrid-sasrec-ml-latest-small.yaml \
        --ckpt_path outputs/demo/hybrid/checkpoints/best.ckpt --clients 1 8 64 --seconds 10

Starts the service as its own process (`lightning-rec serve`, the given `-c` files and --ckpt_path, any
further options passed on), waits for /ready, then for each number of concurrent clients keeps that
many keep-alive connections busy for --seconds, each posting a random user's recent history
(--history items of the data, oldest first) and asking for the top --k. Prints p50 / p99 latency and
requests per second per level, and the forward passes the service ran (dynamic batching: fewer passes
than requests under load). Client and server share the machine's cores: report it beside the figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def call(connection: http.client.HTTPConnection, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    payload = None if body is None else json.dumps(body).encode()
    connection.request(method, path, payload, {"Content-Type": "application/json"} if payload else {})
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def wait_ready(port: int, server: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the service exited with code {server.returncode} before it was ready")
        try:
            if call(http.client.HTTPConnection("127.0.0.1", port, timeout=5), "GET", "/ready")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"the service was not ready after {timeout:.0f} s")


def load(port: int, bodies: list[dict], clients: int, seconds: float) -> list[float]:
    """Latencies (s) of every request `clients` keep-alive clients sent in `seconds`."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(seed: int) -> None:
        rng, connection, mine = random.Random(seed), http.client.HTTPConnection("127.0.0.1", port, timeout=30), []
        while time.monotonic() < stop:
            start = time.perf_counter()
            status, answer = call(connection, "POST", "/recommend", rng.choice(bodies))
            mine.append(time.perf_counter() - start)
            if status != 200:
                sys.exit(f"request failed with {status}: {answer}")
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def histories(config_args: list[str], length: int, count: int = 1000) -> list[list]:
    """`count` users' last `length` item ids, read from the data of the recipe (its source's file)."""
    from lightning_rec.cli import RecommenderCLI

    data = RecommenderCLI(args=config_args, run=False).datamodule
    data.setup("predict")
    users = random.Random(0).sample(range(data.data.num_users), min(count, data.data.num_users))
    ids = data.data.item_ids
    return [[ids[item - 1] for item in data.data.user_history(user)[-length:].tolist()] for user in users]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--history", type=int, default=20, help="items per posted history")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the service")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    known, rest = parser.parse_known_args()
    config_args = [arg for pair in zip(rest[::2], rest[1::2]) if pair[0] == "-c" for arg in pair]
    bodies = [{"items": items, "k": known.k} for items in histories(config_args, known.history)]

    port = free_port()
    command = [sys.executable, "-m", "lightning_rec.cli", "serve", *rest, "--ckpt_path", known.ckpt_path]
    environment = {**os.environ, "OMP_NUM_THREADS": str(known.threads)}
    server = subprocess.Popen([*command, "--port", str(port)], env=environment, stdout=subprocess.DEVNULL)
    try:
        wait_ready(port, server)
        load(port, bodies, 1, 1.0)  # warm-up
        results = []
        for clients in known.clients:
            before = call(http.client.HTTPConnection("127.0.0.1", port), "GET", "/stats")[1]
            latencies = sorted(load(port, bodies, clients, known.seconds))
            after = call(http.client.HTTPConnection("127.0.0.1", port), "GET", "/stats")[1]
            result = {
                "clients": clients,
                "requests": len(latencies),
                "requests_per_s": len(latencies) / known.seconds,
                "p50_ms": 1000 * statistics.median(latencies),
                "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
                "forward_passes": after["forward_passes"] - before["forward_passes"],
            }
            results.append(result)
            print(
                f"{clients:3d} clients: {result['requests_per_s']:7.1f} requests/s, p50 {result['p50_ms']:6.1f} ms, "
                f"p99 {result['p99_ms']:6.1f} ms, {result['requests']} requests in {result['forward_passes']} "
                f"forward passes",
                flush=True,
            )
        print(
            f"histories of {known.history} items, top {known.k}, service on {known.threads} torch thread(s), "
            f"{os.cpu_count()} cores shared with the clients, load average {os.getloadavg()[0]:.2f}"
        )
        if known.json:
            known.json.write_text(json.dumps(results, indent=2))
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
