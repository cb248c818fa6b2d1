"""Live studio server: HTTP API, validation, token gate, body cap, WebSocket frames and fuzzing."""
from __future__ import annotations

import asyncio
import io
import json
import random
import string

import numpy as np
import pytest

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")
from PIL import Image
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from e2e.fakes import MOUTH_BOX, FakeCharacter, FakeMixer, region_changed
from kyara.errors import KyaraError
from kyara.live import LiveEngine
from kyara.pose import NAMES
from kyara.server import ServerSettings, create_app
from kyara.server.api import FrameHeader

EVENTS = ["wink", "surprised", "happy_nod"]
TOKEN = "s3cret-token-123"


def make_app(settings=ServerSettings()):
    engine = LiveEngine(FakeCharacter(), FakeMixer(), fps=120)
    return create_app(engine, settings, known_events=EVENTS), engine


@pytest.fixture
def client():
    app, engine = make_app()
    with TestClient(app) as c:
        c.engine = engine
        c.app = app
        yield c


def wait_frame(client, min_inputs=0, timeout_s=5.0):
    """The current frame PNG once the engine has published one including `min_inputs` inputs."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        latest = client.engine.latest
        if latest is not None and latest.inputs_applied >= min_inputs:
            r = client.get("/api/frame.png")
            assert r.status_code == 200
            return np.asarray(Image.open(io.BytesIO(r.content)))
        time.sleep(0.01)
    raise AssertionError("no frame published in time")


def test_pages_and_parameters(client):
    r = client.get("/")
    assert r.status_code == 200 and "kyara live studio" in r.text
    r = client.get("/obs")
    assert r.status_code == 200 and "background: transparent" in r.text
    assert client.get("/static/studio.js").status_code == 200
    meta = client.get("/api/parameters").json()
    assert [p["name"] for p in meta["parameters"]] == list(NAMES)
    assert "happy" in meta["presets"] and meta["events"] == EVENTS


def test_get_and_put_pose(client):
    pose = client.get("/api/pose").json()
    assert list(pose) == list(NAMES) and all(v == 0.0 for v in pose.values())
    r = client.put("/api/pose", json={"mouth_aaa": 0.7, "head_y": -0.5})
    assert r.status_code == 200 and r.json()["input"] == 1
    wait_frame(client, 1)
    pose = client.get("/api/pose").json()
    assert pose["mouth_aaa"] == pytest.approx(0.7) and pose["head_y"] == pytest.approx(-0.5)
    assert client.delete("/api/pose").status_code == 200
    assert client.engine.manual == {}


@pytest.mark.parametrize("body, status, needle", [
    ({"head_x": 2.0}, 400, "head_x"),
    ({"mouth_aaaa": 0.5}, 400, "mouth_aaaa"),
    ({"mouth_aaa": "0.5"}, 400, "mouth_aaa"),
    ({"mouth_aaa": True}, 400, "mouth_aaa"),
    ({"mouth_aaa": None}, 400, "mouth_aaa"),
    ([1, 2, 3], 400, "JSON object"),
    ("{\"mouth_aaa\": NaN}", 400, "NaN"),
    ("{\"mouth_aaa\": Infinity}", 400, "Infinity"),
    ("{not json", 400, "not valid JSON"),
    ("", 400, "empty"),
])
def test_put_pose_validation(client, body, status, needle):
    if isinstance(body, str):
        r = client.put("/api/pose", content=body.encode(), headers={"content-type": "application/json"})
    else:
        r = client.put("/api/pose", json=body)
    assert r.status_code == status
    assert needle in r.json()["error"]
    assert client.engine.manual == {}


def test_body_size_cap(client):
    big = json.dumps({"mouth_aaa": 0.5, "pad": "x" * 70_000})
    r = client.put("/api/pose", content=big.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["error"]
    # without Content-Length (chunked), the cap still holds
    r = client.put("/api/pose", content=iter([b"{" + b" " * 40_000, b" " * 40_000 + b"}"]))
    assert r.status_code == 413


def test_frame_png_is_rgba_and_slider_changes_mouth_region(client):
    before = wait_frame(client)
    assert before.shape == (512, 512, 4) and before.dtype == np.uint8
    assert before[5, 5, 3] == 0 and before[300, 256, 3] == 255
    n = client.put("/api/pose", json={"mouth_aaa": 1.0}).json()["input"]
    after = wait_frame(client, n)
    assert region_changed(before, after, MOUTH_BOX) > 0.2
    assert region_changed(before, after, (0, 280, 0, 512)) == 0.0


def test_event_preset_idle_calibrate_status(client):
    r = client.post("/api/event", json={"name": "wink"})
    assert r.status_code == 200 and client.engine.mixer.events == ["wink"]
    r = client.post("/api/event", json={"name": "backflip"})
    assert r.status_code == 404
    assert "backflip" in r.json()["error"] and all(e in r.json()["error"] for e in EVENTS)
    assert client.post("/api/event", json={"name": 3}).status_code == 400
    r = client.post("/api/preset", json={"name": "happy", "intensity": 0.5})
    assert r.status_code == 200 and client.engine.mixer.preset == ("happy", 0.5)
    assert client.post("/api/preset", json={"name": "happy", "intensity": 1.5}).status_code == 400
    r = client.post("/api/preset", json={"name": "grumpy"})
    assert r.status_code == 404 and "neutral" in r.json()["error"]
    r = client.post("/api/idle", json={"blink": False})
    assert r.status_code == 200 and r.json()["idle"] == {"blink": False, "breathing": True, "sway": True}
    assert client.post("/api/idle", json={"blink": "no"}).status_code == 400
    assert client.post("/api/idle", json={"wiggle": True}).status_code == 400
    assert client.post("/api/calibrate").status_code == 200 and client.engine.mixer.calibrations == 1
    status = client.get("/api/status").json()
    assert status["idle"]["blink"] is False and status["server"]["http_rejected"] >= 5
    assert {"fps", "latency_ms", "render_ms", "sources"} <= set(status)


def test_websocket_frames_status_and_commands(client):
    with client.websocket_connect("/ws") as ws:
        got_frame = got_status = False
        for _ in range(20):
            msg = ws.receive()
            if msg.get("bytes"):
                seq, inputs = FrameHeader.unpack(msg["bytes"])
                img = Image.open(io.BytesIO(msg["bytes"][FrameHeader.size:]))
                assert img.format == "WEBP" and img.mode == "RGBA" and seq >= 1
                got_frame = True
            elif msg.get("text"):
                status = json.loads(msg["text"])
                assert status["type"] == "status" and "fps" in status
                got_status = True
            if got_frame and got_status:
                break
        assert got_frame and got_status
        ws.send_text(json.dumps({"type": "pose", "values": {"mouth_aaa": 0.4}}))
        ws.send_text("garbage")
        ws.send_text(json.dumps({"type": "pose", "values": {"mouth_aaa": 9}}))
        ws.send_bytes(b"\x00\x01")
        ws.send_text(json.dumps({"type": "event", "name": "surprised"}))
        # the connection keeps streaming after bad messages; the good ones were applied
        for _ in range(50):
            msg = ws.receive()
            if msg.get("bytes") and FrameHeader.unpack(msg["bytes"])[1] >= 2:
                break
        else:
            raise AssertionError("no frame including the WebSocket inputs")
    assert client.engine.manual == {"mouth_aaa": pytest.approx(0.4)}
    assert client.engine.mixer.events == ["surprised"]
    stats = client.get("/api/status").json()["server"]
    assert stats["ws_dropped"] == 3 and stats["ws_messages"] == 5 and stats["ws_clients"] == 0


def test_clients_come_and_go(client):
    for _ in range(5):
        with client.websocket_connect("/ws") as ws:
            assert ws.receive()  # a frame or status arrives right away
    with client.websocket_connect("/ws") as a, client.websocket_connect("/ws") as b:
        a.receive(), b.receive()
        assert client.engine.subscriber_count == 2
    assert client.get("/api/status").json()["server"]["ws_connections"] == 7


def test_token_enforced():
    app, engine = make_app(ServerSettings(token=TOKEN))
    with TestClient(app) as c:
        assert c.get("/api/pose").status_code == 401
        assert c.get("/").status_code == 401
        assert c.get("/api/pose", headers={"Authorization": "Bearer wrong-token-xx"}).status_code == 401
        assert c.get("/api/pose", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert c.get(f"/?token={TOKEN}").status_code == 200
        assert c.get(f"/obs?token={TOKEN}").status_code == 200
        assert c.put("/api/pose", json={"head_y": 0.1}).status_code == 401
        assert engine.manual == {}
        assert c.get("/static/frames.js").status_code == 200  # assets hold no secrets
        with pytest.raises(WebSocketDisconnect) as e:
            with c.websocket_connect("/ws") as ws:
                ws.receive()
        assert e.value.code == 1008
        with c.websocket_connect(f"/ws?token={TOKEN}") as ws:
            assert ws.receive()


def test_bind_refused_without_token():
    engine = LiveEngine(FakeCharacter(), FakeMixer())
    for host in ("0.0.0.0", "192.168.1.20", "::"):
        with pytest.raises(KyaraError, match="requires --token"):
            create_app(engine, ServerSettings(host=host))
    create_app(engine, ServerSettings(host="0.0.0.0", token=TOKEN))
    create_app(engine, ServerSettings(host="localhost"))
    create_app(engine, ServerSettings(host="::1"))
    with pytest.raises(KyaraError, match="token"):
        create_app(engine, ServerSettings(host="0.0.0.0", token="short"))


def _random_json(rng: random.Random, depth=0):
    kind = rng.randrange(9 if depth < 3 else 5)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 1, 2**70, 1e308, -1e-300, 0.5, rng.uniform(-5, 5)])
    if kind == 2:
        return "".join(rng.choice(string.printable) for _ in range(rng.randrange(12)))
    if kind == 3:
        return rng.choice(list(NAMES))
    if kind == 4:
        return rng.choice(["pose", "event", "preset", "idle", "reset", "calibrate", "ping", "wink", "happy"])
    if kind in (5, 6):
        keys = [rng.choice(["type", "values", "name", "intensity", "blink", rng.choice(NAMES), "x"]) for _ in range(rng.randrange(5))]
        return {k: _random_json(rng, depth + 1) for k in keys}
    return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]


def _fuzz_messages(rng: random.Random, n: int):
    for _ in range(n):
        r = rng.random()
        if r < 0.5:
            yield json.dumps(_random_json(rng))
        elif r < 0.7:
            msg = {"type": "pose", "values": {rng.choice(NAMES): rng.choice([rng.uniform(-2, 2), "1", None, [], 1e400])}}
            yield json.dumps(msg)  # may contain Infinity
        elif r < 0.8:
            yield "".join(rng.choice(string.printable) for _ in range(rng.randrange(40)))
        elif r < 0.9:
            yield bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        else:
            good = json.dumps({"type": "pose", "values": {"mouth_aaa": rng.random()}})
            yield good[: rng.randrange(len(good))]  # truncated


def test_fuzz_10000_messages_http_and_websocket(client):
    rng = random.Random(1234)
    n_ws = n_http = 5000
    with client.websocket_connect("/ws") as ws:
        for msg in _fuzz_messages(rng, n_ws):
            (ws.send_bytes if isinstance(msg, bytes) else ws.send_text)(msg)
        ws.send_text(json.dumps({"type": "ping"}))
        ws.receive()
    methods = [("PUT", "/api/pose"), ("POST", "/api/event"), ("POST", "/api/preset"), ("POST", "/api/idle")]
    codes = {}

    async def http_fuzz():  # in-process ASGI transport: same app, ~4x faster than TestClient's thread portal
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as ac:
            for msg in _fuzz_messages(rng, n_http):
                method, path = rng.choice(methods)
                body = msg if isinstance(msg, bytes) else msg.encode()
                r = await ac.request(method, path, content=body, headers={"content-type": "application/json"})
                codes[r.status_code] = codes.get(r.status_code, 0) + 1

    # run on a fresh thread: an earlier test's TestClient may leave an event loop set on this one
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, http_fuzz()).result()
    assert set(codes) <= {200, 400, 404, 413}, codes
    assert codes.get(400, 0) > 1000
    # still alive and answering, engine still rendering
    status = client.get("/api/status").json()
    assert status["server"]["ws_messages"] == n_ws + 1
    assert status["server"]["ws_dropped"] > 1000 and status["tick_errors"] == 0
    n = client.put("/api/pose", json={"mouth_aaa": 0.33}).json()["input"]
    wait_frame(client, n)
    assert client.get("/api/pose").json()["mouth_aaa"] == pytest.approx(0.33)


def test_cli_refuses_public_host_without_token(capsys):
    from kyara.cli import main

    assert main(["live", "--host", "0.0.0.0", "--no-browser", "--no-trackers"]) == 2
    err = capsys.readouterr().err
    assert "requires --token" in err and "0.0.0.0" in err


def test_real_mixer_idle_toggles_and_events():
    pytest.importorskip("kyara.drive.mixer")
    from kyara.drive.events import EVENTS as REAL_EVENTS
    from kyara.drive.idle import IdleConfig, IdleMotion
    from kyara.drive.mixer import MixerConfig, PoseMixer

    engine = LiveEngine(FakeCharacter(), PoseMixer(MixerConfig(), IdleMotion(IdleConfig())), fps=60)
    with TestClient(create_app(engine)) as c:
        assert c.get("/api/parameters").json()["events"] == list(REAL_EVENTS)
        r = c.post("/api/idle", json={"breathing": False, "sway": False})
        assert r.json()["idle"] == {"blink": True, "breathing": False, "sway": False}
        assert c.post("/api/event", json={"name": "wink"}).status_code == 200
        assert c.put("/api/pose", json={"mouth_aaa": 0.5}).status_code == 200
        assert engine.mixer.pose(engine.clock())["mouth_aaa"] == pytest.approx(0.5)
