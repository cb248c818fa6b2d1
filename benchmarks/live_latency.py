"""Live server benchmark: delivered frames/s per client, pose-to-frame latency and server memory.

The server (``LiveEngine`` + the real ``create_app`` under uvicorn, real ``PoseMixer``) runs in a
**subprocess** of this script, so its RSS is measured alone and the clients do not share its GIL.
Default character: the bundled sample student (``kyara.character.SAMPLE_CHARACTER``).

The clients use only the standard library (a minimal RFC 6455 WebSocket client and http.client),
so the machine needs only what the server needs: torch, numpy, pillow, safetensors, starlette,
uvicorn and one WebSocket implementation for uvicorn (``websockets`` or ``wsproto``). Pure-Python
wheels that are enough where only torch/numpy/safetensors/pillow are installed:
    pip download --no-deps --only-binary=:all: -d wheels starlette anyio sniffio idna typing_extensions \
        uvicorn click h11 wsproto   # then: pip install --no-index --find-links wheels starlette uvicorn wsproto

Measured
  client frames/s  binary WebSocket frames each client received in the measurement window / window.
  PUT→frame        PUT /api/pose sent (its answer carries the input number n) → first WebSocket frame
                   whose 8-byte header (``kyara.server.api.FrameHeader``: uint32 seq, uint32 inputs
                   applied) says inputs_applied >= n, i.e. the first frame whose pose was read after
                   that PUT was applied. Per client; includes HTTP, waiting for the render in flight,
                   render, WebP encode and transport. Median / p99 over all PUTs of the window.
  server latency   the engine's own (input noted → frame including it published), from /api/status.
  RSS              VmRSS of the server process every --rss-every-s from server-ready to the end;
                   start / max / end and the least-squares slope (MiB/min).

Poses are PUT at a steady --pose-rate; idle motion (blink, breathing, sway) is on unless --no-idle,
so the pose changes every tick (one render per tick: the worst case).

    PYTHONPATH=src python3 benchmarks/live_latency.py --device cpu --seconds 60 --clients 2
    PYTHONPATH=src python3 benchmarks/live_latency.py --device cuda --seconds 60 --clients 2 --json out.json
    python benchmarks/live_latency.py --character fake        # ~1 ms drawing: server/encode/transport only
    python benchmarks/live_latency.py --character my.kyara --seconds 600 --rss-every-s 10   # memory run

Prints a markdown table (and the RSS series with --rss-series); --json OUT writes everything.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import platform
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import numpy as np

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3


# -- the server process (``--serve``) ---------------------------------------------------------
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


def load_character(character: str, device: str):
    if character == "fake":
        return FakeCharacter()
    from kyara.character import SAMPLE_CHARACTER, load_character as load, random_character

    if character == "random":
        return random_character(device=device)
    if character == "tiny":   # a small random student on the sample's image and region (browser renders in seconds)
        from kyara.web.poses import tiny_character

        return tiny_character()
    return load(SAMPLE_CHARACTER if character == "sample" else character, device=device)


def serve(args) -> None:
    """Load the character, build engine + app, print one JSON line {"port", "pid", ...}, serve until SIGINT/SIGTERM."""
    import torch
    import uvicorn

    from kyara.drive.idle import IdleConfig, IdleMotion
    from kyara.drive.mixer import MixerConfig, PoseMixer
    from kyara.live import LiveEngine
    from kyara.pose import Pose
    from kyara.server import ServerSettings, create_app

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    character = load_character(args.character, args.device)
    if args.student != "full" and args.character != "fake":
        from kyara.student.lite import use_student

        use_student(character, args.student)
        if hasattr(character.poser, "face_plan"):
            character.poser.face_plan()   # the one-time analysis before the first frame
    load_s = time.perf_counter() - t0
    threads = torch.get_num_threads()   # now: renders set it to 1 for a moment (kyara.student.lite's lanes)
    for _ in range(2):  # warm-up (CUDA context, cudnn autotune, allocator) outside the measurement
        character.render_rgba(Pose())
    idle = IdleConfig(blink=not args.no_idle, breathing=not args.no_idle, sway=not args.no_idle)
    from kyara.live.session import LiveConfig

    # as `kyara live` does: --server-fps, else at most 30 server frames/s on a CPU
    frame_fps = LiveConfig(fps=args.fps, server_fps=args.server_fps).frame_fps(args.device)
    engine = LiveEngine(character, PoseMixer(MixerConfig(), IdleMotion(idle)), fps=args.fps,
                        encoders=args.encoders, render=args.render, frame_fps=frame_fps)
    settings = ServerSettings(port=0, render=args.render)
    server = uvicorn.Server(uvicorn.Config(create_app(engine, settings, known_events=[]), host="127.0.0.1", port=0,
                                           log_level="warning", lifespan="on", ws=args.uvicorn_ws,
                                           ws_max_size=settings.max_ws_message_bytes))

    def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.02)
        device = str(getattr(character, "device", "cpu"))
        print(json.dumps({"port": server.servers[0].sockets[0].getsockname()[1], "pid": os.getpid(),
                          "character": str(getattr(character, "name", "?")), "device": device,
                          "load_s": round(load_s, 2), "torch_threads": threads,
                          "torch": torch.__version__,
                          "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None}),
              flush=True)

    threading.Thread(target=announce, daemon=True).start()
    try:
        server.run()  # main thread: uvicorn handles SIGINT/SIGTERM and shuts down gracefully ...
    except KeyboardInterrupt:
        pass  # ... then re-raises SIGINT, which is how the parent stops us


# -- a minimal WebSocket client (RFC 6455), standard library only ------------------------------
class WebSocketClient:
    """Receives messages from ws://host:port/path on its own thread; answers pings; records every
    binary frame as (arrival perf_counter, seq, inputs_applied, bytes)."""

    def __init__(self, host: str, port: int, path: str = "/ws", timeout_s: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16))
        self.sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + f"{host}:{port}".encode()
                          + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key
                          + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self._buf = bytearray()
        while b"\r\n\r\n" not in self._buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("server closed the connection during the WebSocket handshake")
            self._buf += chunk
        head, _, rest = bytes(self._buf).partition(b"\r\n\r\n")
        self._buf = bytearray(rest)
        lines = head.split(b"\r\n")
        if b" 101 " not in lines[0] + b" ":
            raise ConnectionError(f"WebSocket handshake refused: {lines[0].decode('latin-1')}")
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        if not any(line.lower().startswith(b"sec-websocket-accept:") and line.split(b":", 1)[1].strip() == accept
                   for line in lines[1:]):
            raise ConnectionError("WebSocket handshake: missing or wrong Sec-WebSocket-Accept")
        self.sock.settimeout(0.5)
        self.frames: list[tuple[float, int, int, int]] = []
        self.text_messages = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._send_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            if self._stop.is_set():
                raise EOFError
            try:
                chunk = self.sock.recv(1 << 16)
            except socket.timeout:
                continue
            if not chunk:
                raise EOFError
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def _send(self, opcode: int, payload: bytes = b"") -> None:
        n = len(payload)
        header = bytes([0x80 | opcode])
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)  # client → server frames must be masked
        masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
        with self._send_lock:
            self.sock.sendall(header + mask + masked)

    def _run(self) -> None:
        message = bytearray()
        message_opcode = 0
        try:
            while not self._stop.is_set():
                b0, b1 = self._read(2)
                opcode, length = b0 & 0x0F, b1 & 0x7F
                if length == 126:
                    length = struct.unpack(">H", self._read(2))[0]
                elif length == 127:
                    length = struct.unpack(">Q", self._read(8))[0]
                mask = self._read(4) if b1 & 0x80 else None
                payload = self._read(length)
                if mask:
                    payload = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
                if opcode == 0x9:      # ping
                    self._send(0xA, payload)
                    continue
                if opcode == 0x8:      # close
                    self._send(0x8, payload[:2])
                    return
                if opcode == 0xA:      # pong
                    continue
                if opcode in (0x1, 0x2):
                    message_opcode, message = opcode, bytearray(payload)
                else:                  # continuation
                    message += payload
                if not b0 & 0x80:
                    continue
                if message_opcode == 0x2 and len(message) == 192 and message[:3] == b"KP\x01":
                    seq, inputs = struct.unpack_from("<II", message, 4)  # a pose packet (--render browser)
                    self.frames.append((time.perf_counter(), seq, inputs, len(message)))
                elif message_opcode == 0x2:
                    seq, inputs = struct.unpack(">II", message[:8])
                    self.frames.append((time.perf_counter(), seq, inputs, len(message)))
                else:
                    self.text_messages += 1
        except EOFError:
            pass
        except OSError as e:
            if not self._stop.is_set():
                self.error = f"{type(e).__name__}: {e}"

    def close(self) -> None:
        self._stop.set()
        try:
            self._send(0x8, struct.pack(">H", 1000))
        except OSError:
            pass
        self._thread.join(5)
        self.sock.close()


# -- measurement --------------------------------------------------------------------------------
def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process pid and its threads so far (/proc/PID/stat), nan off Linux."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def percentile(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def slope_mib_per_min(series: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) samples, in MiB per minute."""
    if len(series) < 3:
        return float("nan")
    t, v = np.asarray(series, dtype=np.float64).T
    return float(np.polyfit(t / 60.0, v, 1)[0])


def quarter_stat(series: list[tuple[float, float]], fn) -> list[float]:
    """fn (min or max) of the samples in each quarter of the series' time span."""
    if not series:
        return []
    end = series[-1][0] or 1.0
    quarters = [[v for t, v in series if q * end / 4 <= t < (q + 1) * end / 4 or (q == 3 and t == end)]
                for q in range(4)]
    return [round(fn(q), 1) if q else float("nan") for q in quarters]


def first_frame_latencies(frames, sent) -> list[float]:
    """frames: [(arrival, seq, inputs_applied, bytes)] in arrival order; sent: [(input n, t_sent)].
    For each n: ms from t_sent to the first frame with inputs_applied >= n (missing ones left out)."""
    if not frames:
        return []
    arrivals = np.array([f[0] for f in frames])
    inputs = np.maximum.accumulate(np.array([f[2] for f in frames]))
    out = []
    for n, t_sent in sent:
        j = int(np.searchsorted(inputs, n, side="left"))
        if j < len(frames):
            out.append((arrivals[j] - t_sent) * 1000.0)
    return out


def api(conn: http.client.HTTPConnection, method: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    try:
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
        conn.close()  # the server closed an idle keep-alive connection (uvicorn: after 5 s); reconnect once
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
    payload = r.read()
    if r.status != 200:
        raise RuntimeError(f"{method} {path}: HTTP {r.status} {payload[:200]!r}")
    return json.loads(payload)


def start_server(args) -> tuple[subprocess.Popen, dict]:
    cmd = [sys.executable, os.path.abspath(__file__), "--serve", "--character", args.character,
           "--device", args.device, "--fps", str(args.fps), "--encoders", str(args.encoders),
           "--student", args.student, "--render", args.render]
    if args.server_fps:
        cmd += ["--server-fps", str(args.server_fps)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.no_idle:
        cmd.append("--no-idle")
    cmd += ["--uvicorn-ws", args.uvicorn_ws]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # blocks until the server is up (or died)
    if not line:
        proc.wait(10)
        raise SystemExit(f"the server process exited with {proc.returncode} before listening (see its stderr above)")
    info = json.loads(line)
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # drain anything else it prints
    return proc, info


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def run(args) -> dict:
    load_start = os.getloadavg()
    proc, info = start_server(args)
    pid, port = info["pid"], info["port"]
    rss: list[tuple[float, float]] = []
    t_ready = time.perf_counter()
    stop = threading.Event()

    def sample_rss() -> None:
        while True:
            rss.append((time.perf_counter() - t_ready, rss_mib(pid)))
            if stop.wait(args.rss_every_s):
                rss.append((time.perf_counter() - t_ready, rss_mib(pid)))
                return

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    clients: list[WebSocketClient] = []
    try:
        clients = [WebSocketClient("127.0.0.1", port) for _ in range(args.clients)]
        deadline = time.perf_counter() + args.first_frame_timeout_s
        while not all(c.frames for c in clients):
            if time.perf_counter() > deadline:
                raise SystemExit(f"no frame within {args.first_frame_timeout_s:g} s on some client")
            time.sleep(0.05)
        time.sleep(args.warmup_s)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        status_before = api(conn, "GET", "/api/status")
        t_status_before = time.perf_counter()
        sent: list[tuple[int, float]] = []
        put_ms: list[float] = []
        period = 1.0 / args.pose_rate
        t0 = time.perf_counter()
        cpu_start = cpu_seconds(pid)
        t_end = t0 + args.seconds
        k = 0
        while True:
            t_next = t0 + k * period
            if t_next >= t_end:
                break
            delay = t_next - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            # every PUT changes the pose: mouth and head cycle with different periods
            values = {"mouth_aaa": round((k % 10) / 10, 3), "head_y": round(((k % 7) - 3) / 6, 3)}
            t_sent = time.perf_counter()
            n = api(conn, "PUT", "/api/pose", values)["input"]
            put_ms.append((time.perf_counter() - t_sent) * 1000.0)
            sent.append((n, t_sent))
            k += 1
        window_end = time.perf_counter()
        cpu_end = cpu_seconds(pid)
        # let the last inputs arrive: up to 3 frame intervals (at least 2 s) past the last PUT
        intervals = np.diff([f[0] for f in clients[0].frames[-20:]])
        time.sleep(max(2.0, 3.0 * float(np.median(intervals)) if len(intervals) else 2.0))
        status = api(conn, "GET", "/api/status")
        t_status = time.perf_counter()
        conn.close()
    finally:
        for c in clients:
            c.close()
        stop.set()
        sampler.join(5)
        stop_server(proc)
    load_end = os.getloadavg()

    elapsed = window_end - t0
    per_client = []
    all_latencies: list[float] = []
    for c in clients:
        in_window = [f for f in c.frames if t0 <= f[0] < window_end]
        latencies = first_frame_latencies(c.frames, sent)
        all_latencies += latencies
        seqs = [f[1] for f in in_window]
        per_client.append({
            "frames": len(in_window),
            "fps": len(in_window) / elapsed,
            "skipped": (seqs[-1] - seqs[0] + 1 - len(seqs)) if seqs else 0,  # published but not delivered
            "latency_ms": {"n": len(latencies), "median": percentile(latencies, 50),
                           "p99": percentile(latencies, 99), "max": max(latencies) if latencies else float("nan")},
            "frame_kib_median": float(np.median([f[3] for f in in_window]) / 1024) if in_window else float("nan"),
            "error": c.error,
        })
    published = status["frames"] - status_before["frames"]
    warm = [s for s in rss if s[0] >= min(60.0, 0.25 * rss[-1][0])] if rss else []
    rss_values = [v for _, v in rss]
    return {
        "args": {k: v for k, v in vars(args).items() if k != "serve"},
        "server": info,
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
                 "loadavg_start": load_start, "loadavg_end": load_end},
        "seconds": elapsed,
        "puts": len(sent),
        "put_ms": {"median": percentile(put_ms, 50), "p99": percentile(put_ms, 99)},
        "server_fps": published / (t_status - t_status_before),  # between the two /api/status calls
        "server_cpu_per_s": (cpu_end - cpu_start) / elapsed,     # cores the server process used in the window
        "status": {k: status[k] for k in ("render_ms", "encode_ms", "latency_ms", "tick_errors", "last_error",
                                          "frame_bytes", "frame_fps")},
        "clients": per_client,
        "latency_ms_all_clients": {"n": len(all_latencies), "median": percentile(all_latencies, 50),
                                   "p99": percentile(all_latencies, 99)},
        "rss_mib": {"start": rss_values[0] if rss_values else float("nan"),
                    "max": max(rss_values) if rss_values else float("nan"),
                    "end": rss_values[-1] if rss_values else float("nan"),
                    "slope_per_min": slope_mib_per_min(rss),
                    "slope_per_min_after_warmup": slope_mib_per_min(warm),
                    # allocator churn makes single samples swing by hundreds of MiB on CPU; a leak
                    # shows as a rising floor: the minimum of each quarter of the run
                    "quarter_min": quarter_stat(rss, min), "quarter_max": quarter_stat(rss, max),
                    "series": [(round(t, 1), round(v, 1)) for t, v in rss]},
    }


def table(r: dict) -> str:
    s, st = r["server"], r["status"]
    f1 = lambda x: f"{x:.1f}"  # noqa: E731
    rows = [
        ("character", f"{r['args']['character']} ({s['character']}) on {s['device']}"
                      + (f" ({s['gpu']})" if s.get("gpu") else "")),
        ("host", f"{r['host']['machine']}, {r['host']['cpus']} CPUs, torch {s['torch']} threads={s['torch_threads']}, "
                 f"load avg {r['host']['loadavg_start'][0]:.2f} → {r['host']['loadavg_end'][0]:.2f}"),
        ("render (WebSocket messages)", "browser (pose packets)" if r["args"].get("render") == "browser"
                                        else "server (WebP frames)"),
        ("WebSocket clients", len(r["clients"])),
        ("measured window (s)", f"{r['seconds']:.0f}"),
        ("pose inputs (PUT /api/pose)", f"{r['puts']} at {r['args']['pose_rate']:g}/s; PUT ms median "
                                        f"{f1(r['put_ms']['median'])} / p99 {f1(r['put_ms']['p99'])}"),
        ("server frames/s (ticks/s; most frames/s)", f"{r['server_fps']:.2f} ({r['args']['fps']:g}; "
                                                     f"{st['frame_fps']:g})"),
        ("WebP encoder threads", r["args"].get("encoders", 1)),
        ("server CPU (cores used, CPU s per s)", f"{r['server_cpu_per_s']:.2f}"),
        ("delivered frames/s per client", ", ".join(f"{c['fps']:.2f}" for c in r["clients"])),
        ("frames skipped per client (slow client)", ", ".join(str(c["skipped"]) for c in r["clients"])),
        ("render ms (median / p99)", f"{st['render_ms']['median']} / {st['render_ms']['p99']}"),
        ("WebP encode ms (median / p99)", f"{st['encode_ms']['median']} / {st['encode_ms']['p99']}"),
        ("frame size KiB (median)", f1(r["clients"][0]["frame_kib_median"])),
        ("server input→frame ms (median / p99)", f"{st['latency_ms']['median']} / {st['latency_ms']['p99']}"),
        ("PUT→frame ms per client (median / p99, n)",
         "; ".join(f"{f1(c['latency_ms']['median'])} / {f1(c['latency_ms']['p99'])} (n={c['latency_ms']['n']})"
                   for c in r["clients"])),
        ("server RSS MiB start / max / end", f"{r['rss_mib']['start']:.0f} / {r['rss_mib']['max']:.0f} / "
                                             f"{r['rss_mib']['end']:.0f}"),
        ("server RSS slope MiB/min (all / after warm-up)", f"{r['rss_mib']['slope_per_min']:.2f} / "
                                                            f"{r['rss_mib']['slope_per_min_after_warmup']:.2f}"),
        ("server RSS MiB min per quarter of the run", " → ".join(f"{v:.0f}" for v in r["rss_mib"]["quarter_min"])),
        ("server RSS MiB max per quarter of the run", " → ".join(f"{v:.0f}" for v in r["rss_mib"]["quarter_max"])),
        ("tick errors", st["tick_errors"]),
    ]
    return "| metric | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--character", default="sample",
                    help="sample (the bundled student) | fake (no model) | random (random-init student) | tiny (small random "
                         "student, kyara.web.poses.tiny_character) | a .kyara path")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--student", default="full", choices=["auto", "lite", "full"],
                    help="student renderer (kyara.student.lite.use_student); default full")
    ap.add_argument("--seconds", "--duration-s", dest="seconds", type=float, default=60.0,
                    help="length of the measured window")
    ap.add_argument("--clients", type=int, default=1, help="WebSocket clients")
    ap.add_argument("--fps", type=float, default=60.0, help="engine target fps")
    ap.add_argument("--server-fps", type=float, default=None,
                    help="most server frames/s (default: as `kyara live`: --fps on cuda, at most 30 on cpu)")
    ap.add_argument("--encoders", type=int, default=3, help="the server engine's WebP encoder threads")
    ap.add_argument("--pose-rate", type=float, default=10.0, help="PUT /api/pose per second")
    ap.add_argument("--rss-every-s", type=float, default=10.0, help="server RSS sampling period")
    ap.add_argument("--warmup-s", type=float, default=3.0, help="after every client got its first frame")
    ap.add_argument("--first-frame-timeout-s", type=float, default=120.0)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in the server")
    ap.add_argument("--no-idle", action="store_true", help="idle motion off (renders only when a PUT changes the pose)")
    ap.add_argument("--uvicorn-ws", default="auto", choices=["auto", "websockets", "wsproto"],
                    help="uvicorn's WebSocket implementation (auto: websockets if installed, else wsproto)")
    ap.add_argument("--json", default=None, metavar="OUT", help="also write all results (and the RSS series) here")
    ap.add_argument("--rss-series", action="store_true", help="also print every RSS sample")
    ap.add_argument("--render", default="server", choices=["server", "browser"],
                    help="browser: also measure `kyara live --render browser` (192-byte pose packets instead of "
                         "frames): runs server mode, then browser mode, and compares PUT→message latency")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # internal: the server process
    args = ap.parse_args(argv)
    if args.clients < 1 or args.encoders < 1 or not args.pose_rate > 0 or not args.seconds > 0:
        ap.error("--clients >= 1, --encoders >= 1, --pose-rate > 0 and --seconds > 0 are required")
    if args.serve:
        serve(args)
        return
    if args.render == "browser":  # the same run measures server mode first, for comparison
        server_result = run(argparse.Namespace(**{**vars(args), "render": "server"}))
        result = run(args)
        print(table(server_result) + "\n\n" + table(result) + "\n")
        print("| PUT→message ms, all clients | median | p99 | n |\n|---|---|---|---|")
        for name, r in (("server (WebP frame)", server_result), ("browser (pose packet)", result)):
            lat = r["latency_ms_all_clients"]
            print(f"| {name} | {lat['median']:.1f} | {lat['p99']:.1f} | {lat['n']} |")
        result = {"server": server_result, "browser": result}
    else:
        result = run(args)
        print(table(result))
    runs = list(result.values()) if args.render == "browser" else [result]
    if args.rss_series:
        for r in runs:
            print("\nserver RSS (s: MiB): " + ", ".join(f"{t:.0f}: {v:.0f}" for t, v in r["rss_mib"]["series"]))
    errors = [c["error"] for r in runs for c in r["clients"] if c["error"]]
    if errors:
        print(f"\nclient errors: {errors}")
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1)
        os.replace(tmp, args.json)  # atomic; no kyara import in the client process


if __name__ == "__main__":
    main()
