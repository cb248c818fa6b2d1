"""Live server benchmark: frames/s, pose-to-frame latency and memory with N WebSocket clients.

Runs the engine + server in-process (uvicorn on a free loopback port), drives pose changes through
PUT /api/pose at --pose-rate per second, and for every change measures
  server latency  — the engine's own: input noted → first frame including it published (ms);
  client latency  — PUT sent → first WebSocket frame whose header says it includes that input,
                    received by client 0 (ms; includes HTTP, render, encode, send, receive).
The mixer is the real PoseMixer with idle motion on, so the pose changes every tick (the worst
case: a render per tick). RSS of this process is sampled every --rss-every-s.

    python benchmarks/live_latency.py --character fake --clients 2 --duration-s 60
    python benchmarks/live_latency.py --character my.kyara --device cuda
    python benchmarks/live_latency.py --character random        # random-init student (speed only)

Prints a markdown table (and the RSS series with --rss-series).
"""
from __future__ import annotations

import argparse
import asyncio
import platform
import threading
import time

import numpy as np


class FakeCharacter:
    """Pose-dependent drawing (~1 ms): isolates server, encoding and transport costs from the model."""
    name = "fake"

    def __init__(self) -> None:
        yy, xx = np.mgrid[:512, :512]
        self._body = ((xx - 256) / 180.0) ** 2 + ((yy - 300) / 220.0) ** 2 < 1.0

    def render_rgba(self, pose):
        rgba = np.zeros((512, 512, 4), np.uint8)
        rgba[self._body] = (240, 210, 190, 255)
        h = int(40 * pose["mouth_aaa"])
        rgba[300:300 + h, 226:286] = (90, 20, 30, 255)
        s = int(60 * pose["head_y"])
        rgba[120:200, 190 + s:250 + s] = (40, 60, 160, 255)
        return rgba


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def load(character: str, device: str):
    if character == "fake":
        return FakeCharacter()
    from kyara.character import load_character, random_character

    if character == "random":
        return random_character(device=device)
    return load_character(character, device=device)


def percentile(values, q):
    return float(np.percentile(values, q)) if len(values) else float("nan")


async def run_clients(url: str, token_free_ws: str, n_clients: int, duration_s: float, pose_rate: float,
                      rss_every_s: float, rss: list):
    import httpx
    import websockets

    arrivals: dict[int, float] = {}  # inputs_applied → first arrival time on client 0
    counts = [0] * n_clients
    sizes: list[int] = []
    stop = asyncio.Event()

    async def client(i: int):
        async with websockets.connect(token_free_ws, max_size=2**24) as ws:
            while not stop.is_set():
                try:
                    msg = await asyncio.wait_for(ws.recv(), timeout=0.5)
                except asyncio.TimeoutError:
                    continue
                if isinstance(msg, bytes):
                    counts[i] += 1
                    if i == 0:
                        inputs = int.from_bytes(msg[4:8], "big")
                        arrivals.setdefault(inputs, time.perf_counter())
                        if len(sizes) < 2000:
                            sizes.append(len(msg))

    async def driver(sent: list):
        period = 1.0 / pose_rate
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            k = 0
            t_end = time.perf_counter() + duration_s
            while time.perf_counter() < t_end:
                k += 1
                t0 = time.perf_counter()
                r = await http.put("/api/pose", json={"mouth_aaa": (k % 10) / 10, "head_y": ((k % 7) - 3) / 6})
                sent.append((r.json()["input"], t0))
                await asyncio.sleep(max(0.0, period - (time.perf_counter() - t0)))

    async def sampler():
        while not stop.is_set():
            rss.append((time.perf_counter(), rss_mib()))
            try:
                await asyncio.wait_for(stop.wait(), timeout=rss_every_s)
            except asyncio.TimeoutError:
                pass

    sent: list = []
    tasks = [asyncio.create_task(client(i)) for i in range(n_clients)] + [asyncio.create_task(sampler())]
    await asyncio.sleep(1.0)  # clients connected, first frames flowing
    t0 = time.perf_counter()
    await driver(sent)
    await asyncio.sleep(1.0)  # let the last inputs arrive
    elapsed = time.perf_counter() - t0
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    # each input's latency: first frame with inputs_applied >= n
    keys = np.array(sorted(arrivals))
    times = np.array([arrivals[k] for k in keys])
    first_after = np.minimum.accumulate(times[::-1])[::-1] if len(times) else times
    latencies = []
    for n, t_sent in sent:
        j = np.searchsorted(keys, n)
        if j < len(keys):
            latencies.append((first_after[j] - t_sent) * 1000.0)
    return latencies, counts, elapsed, sizes, len(sent)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--character", default="fake", help="fake | random | path to a .kyara file")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--duration-s", type=float, default=60.0)
    ap.add_argument("--fps", type=float, default=60.0, help="engine target fps")
    ap.add_argument("--pose-rate", type=float, default=10.0, help="PUT /api/pose per second")
    ap.add_argument("--rss-every-s", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--rss-series", action="store_true", help="also print every RSS sample")
    args = ap.parse_args(argv)

    import torch
    import uvicorn

    from kyara.drive.idle import IdleConfig, IdleMotion
    from kyara.drive.mixer import MixerConfig, PoseMixer
    from kyara.live import LiveEngine
    from kyara.server import ServerSettings, create_app

    if args.threads:
        torch.set_num_threads(args.threads)
    rss: list = [(time.perf_counter(), rss_mib())]
    character = load(args.character, args.device)
    if hasattr(character, "render_rgba"):
        from kyara.pose import Pose

        character.render_rgba(Pose())  # warm-up outside the measurement
    engine = LiveEngine(character, PoseMixer(MixerConfig(), IdleMotion(IdleConfig())), fps=args.fps)
    settings = ServerSettings(port=0)
    server = uvicorn.Server(uvicorn.Config(create_app(engine, settings, known_events=[]), host="127.0.0.1", port=0,
                                           log_level="warning", ws_max_size=settings.max_ws_message_bytes))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    frames_before = engine.latest.seq if engine.latest else 0
    latencies, counts, elapsed, sizes, n_sent = asyncio.run(run_clients(
        f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws", args.clients, args.duration_s, args.pose_rate,
        args.rss_every_s, rss))
    frames = (engine.latest.seq if engine.latest else 0) - frames_before
    status = engine.status()
    server.should_exit = True
    thread.join(10)

    rss_values = [v for _, v in rss]
    srv = status["latency_ms"]
    rows = [
        ("character", f"{args.character} ({getattr(character, 'name', '?')}) on {args.device}"),
        ("host", f"{platform.machine()} {platform.processor() or ''} torch threads={torch.get_num_threads()}".strip()),
        ("WebSocket clients", args.clients),
        ("duration (s)", f"{elapsed:.0f}"),
        ("pose inputs (PUT /api/pose)", f"{n_sent} at {args.pose_rate:g}/s"),
        ("server frames/s (target)", f"{frames / elapsed:.1f} ({args.fps:g})"),
        ("client frames/s", ", ".join(f"{c / elapsed:.1f}" for c in counts)),
        ("render ms (median / p99)", f"{status['render_ms']['median']} / {status['render_ms']['p99']}"),
        ("WebP encode ms (median / p99)", f"{status['encode_ms']['median']} / {status['encode_ms']['p99']}"),
        ("frame size KiB (median)", f"{np.median(sizes) / 1024:.1f}" if sizes else "-"),
        ("server pose→frame ms (median / p99)", f"{srv['median']} / {srv['p99']}"),
        ("client PUT→frame ms (median / p99)", f"{percentile(latencies, 50):.1f} / {percentile(latencies, 99):.1f}"
         f" (n={len(latencies)})"),
        ("RSS MiB start / end / max", f"{rss_values[0]:.0f} / {rss_values[-1]:.0f} / {max(rss_values):.0f}"),
        ("RSS MiB after warm-up (first sample with clients) → end",
         f"{rss_values[1]:.0f} → {rss_values[-1]:.0f}" if len(rss_values) > 1 else "-"),
        ("tick errors", status["tick_errors"]),
    ]
    print("| metric | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    if args.rss_series:
        t0 = rss[0][0]
        print("\nRSS series (s, MiB): " + ", ".join(f"{t - t0:.0f}:{v:.0f}" for t, v in rss))


if __name__ == "__main__":
    main()
