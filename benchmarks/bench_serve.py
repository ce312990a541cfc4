"""Serving throughput: `aurl serve` with continuous batching on vs off, under a bounded load.

    .venv/bin/python benchmarks/bench_serve.py                       # load test (~5-8 min, 2 cores)
    .venv/bin/python benchmarks/bench_serve.py --quick                # smoke run
    .venv/bin/python benchmarks/bench_serve.py --soak 600             # 10-minute soak at 16 clients

For each mode (``--max-batch 16`` and ``--no-batching``, the CLI's own one-at-a-time loop) a fresh
``aurl serve`` process is started on 127.0.0.1 (never another address) and driven by an asyncio
httpx load generator at 1, 4, 16 and 64 concurrent clients. Each cell sends a fixed number of
``{"tokens": 64, "musicxml": false}`` requests (seeds 0..N-1) and stops early at ``--time-limit``;
it records requests/s, generated tokens/s, p50/p99 latency and errors (any non-200 answer or
transport error). The load generator runs on the same 2 shared cores as the server, so it takes
some of the CPU it measures; the load average is recorded beside every cell. The soak keeps 16
clients busy for ``--soak`` seconds against batching on and samples the server's RSS every 30 s.
Results: benchmarks/results/serve.json (+ .md), or serve_soak.json for the soak.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from aurl.config import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    """``aurl serve`` in a subprocess on a free 127.0.0.1 port."""

    def __init__(self, model: str, extra: list[str]) -> None:
        self.port = _free_port()
        self.url = f"http://{HOST}:{self.port}"
        cmd = [sys.executable, "-m", "aurl.cli", "serve", "--model", model, "--host", HOST,
               "--port", str(self.port), "--max-queue", "256", *extra]  # fmt: skip
        self.cmd = " ".join(cmd[2:])
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for _ in range(600):
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.close()
        raise RuntimeError(f"server did not start: {self.proc.stderr.read().decode()[-2000:]}")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


async def _load(url: str, clients: int, requests: int, time_limit: float, tokens: int, first_seed: int = 0) -> dict:  # fmt: skip
    """``clients`` workers send ``requests`` requests in all (fewer if ``time_limit`` strikes)."""
    next_i = 0
    lat: list[float] = []
    errors: dict[str, int] = {}
    generated = 0
    deadline = time.monotonic() + time_limit
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:

        async def worker() -> None:
            nonlocal next_i, generated
            while next_i < requests and time.monotonic() < deadline:
                i = next_i
                next_i += 1
                body = {"tokens": tokens, "seed": first_seed + i, "musicxml": False}
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/generate", json=body)
                except httpx.HTTPError as err:
                    errors[type(err).__name__] = errors.get(type(err).__name__, 0) + 1
                    continue
                if r.status_code != 200:
                    errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                    continue
                lat.append(time.perf_counter() - t0)
                generated += r.json()["new_tokens"]

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    lat.sort()
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")  # noqa: E731
    return {
        "clients": clients, "sent": next_i, "ok": len(lat), "errors": sum(errors.values()),
        "error_kinds": errors, "elapsed_s": round(elapsed, 2),
        "requests_per_s": round(len(lat) / elapsed, 2), "tokens_per_s": round(generated / elapsed, 1),
        "p50_s": round(pct(0.50), 3), "p99_s": round(pct(0.99), 3),
        "mean_s": round(statistics.fmean(lat), 3) if lat else None,
    }  # fmt: skip


def _occupancy(url: str) -> float | None:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("aurl_batch_occupancy_mean "):
            return round(float(line.split()[1]), 2)
    return None


def load_test(args: argparse.Namespace) -> dict:
    modes = {"batching": ["--max-batch", str(args.max_batch)], "serial": ["--no-batching"]}
    modes = {m: modes[m] for m in args.modes}
    out = {"command": " ".join(sys.argv), "model": args.model, "tokens": args.tokens, "cells": []}
    for mode, extra in modes.items():
        server = Server(args.model, extra)
        try:
            asyncio.run(_load(server.url, 2, 4, 60, args.tokens, first_seed=10_000))  # warm-up
            for clients in args.clients:
                requests = max(args.requests, clients)
                load = os.getloadavg()[0]
                cell = asyncio.run(
                    _load(server.url, clients, requests, args.time_limit, args.tokens)
                )
                cell.update(mode=mode, load_before=round(load, 2), load_after=round(os.getloadavg()[0], 2),
                            rss_mib=round(_rss_mib(server.proc.pid), 1), server=server.cmd)  # fmt: skip
                out["cells"].append(cell)
                print(json.dumps(cell), flush=True)
            out[f"{mode}_mean_occupancy"] = _occupancy(server.url)
        finally:
            server.close()
    serial = {c["clients"]: c for c in out["cells"] if c["mode"] == "serial"}
    for c in out["cells"]:
        if (
            c["mode"] == "batching"
            and c["clients"] in serial
            and serial[c["clients"]]["requests_per_s"]
        ):
            c["speedup_vs_serial"] = round(
                c["requests_per_s"] / serial[c["clients"]]["requests_per_s"], 2
            )
    return out


def soak(args: argparse.Namespace) -> dict:
    server = Server(args.model, ["--max-batch", str(args.max_batch)])
    samples = []
    try:
        asyncio.run(_load(server.url, 2, 4, 60, args.tokens, first_seed=10_000))  # warm-up
        t_end = time.monotonic() + args.soak
        total: dict = {"sent": 0, "ok": 0, "errors": 0, "error_kinds": {}}
        seed = 0
        while time.monotonic() < t_end:
            window = min(30.0, t_end - time.monotonic())
            cell = asyncio.run(_load(server.url, 16, 10**6, window, args.tokens, first_seed=seed))
            seed += cell["sent"]
            for k in ("sent", "ok", "errors"):
                total[k] += cell[k]
            for k, v in cell["error_kinds"].items():
                total["error_kinds"][k] = total["error_kinds"].get(k, 0) + v
            samples.append({"t_s": round(args.soak - (t_end - time.monotonic()), 1),
                            "rss_mib": round(_rss_mib(server.proc.pid), 1),
                            "requests_per_s": cell["requests_per_s"], "p99_s": cell["p99_s"],
                            "load": round(os.getloadavg()[0], 2)})  # fmt: skip
            print(json.dumps(samples[-1]), flush=True)
        health = httpx.get(f"{server.url}/health", timeout=10).status_code
    finally:
        server.close()
    return {"command": " ".join(sys.argv), "model": args.model, "seconds": args.soak, "clients": 16,
            **total, "health_after": health, "rss_start_mib": samples[0]["rss_mib"],
            "rss_end_mib": samples[-1]["rss_mib"], "samples": samples}  # fmt: skip


def _markdown(res: dict) -> str:
    lines = [f"`{res['command']}`", "",
             "| mode | clients | requests | req/s | tokens/s | p50 s | p99 s | errors | vs serial | load |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for c in res["cells"]:
        lines.append(
            f"| {c['mode']} | {c['clients']} | {c['ok']}/{c['sent']} | {c['requests_per_s']} | "
            f"{c['tokens_per_s']} | {c['p50_s']} | {c['p99_s']} | {c['errors']} | "
            f"{c.get('speedup_vs_serial', '')} | {c['load_before']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "models" / "bach_small"))
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument(
        "--requests", type=int, default=32, help="requests per cell (at least 1 per client)"
    )
    p.add_argument("--time-limit", type=float, default=150.0, help="seconds per cell at most")
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument(
        "--modes", nargs="+", default=["batching", "serial"], choices=["batching", "serial"]
    )
    p.add_argument("--name", default="serve", help="results file stem")
    p.add_argument("--soak", type=float, default=0.0, help="soak for this many seconds instead")
    p.add_argument("--quick", action="store_true", help="smoke run: 8 requests, 1 and 4 clients")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args()
    if args.quick:
        args.requests, args.clients, args.time_limit = 8, [1, 4], 30.0
    print(f"$ {' '.join(sys.argv)}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.soak:
        res = soak(args)
        atomic_write_text(args.out / "serve_soak.json", json.dumps(res, indent=2) + "\n")
        print(json.dumps({k: v for k, v in res.items() if k != "samples"}, indent=2))
        return
    res = load_test(args)
    name = f"{args.name}_quick" if args.quick else args.name
    atomic_write_text(args.out / f"{name}.json", json.dumps(res, indent=2) + "\n")
    atomic_write_text(args.out / f"{name}.md", _markdown(res))
    print(_markdown(res))


if __name__ == "__main__":
    main()
