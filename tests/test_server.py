"""Live studio server: HTTP API, validation, token gate, body cap, WebSocket frames and fuzzing;
the browser guard against other web pages (Origin), DNS rebinding (Host) and form posts (content type)."""
from __future__ import annotations

import asyncio
import io
import json
import random
import string
import time

import numpy as np
import pytest

pytest.importorskip("starlette")
try:   # starlette's TestClient moved to httpx2 (the same API); older starlettes use httpx
    import httpx2 as httpx
except ModuleNotFoundError:
    httpx = pytest.importorskip("httpx")
from PIL import Image
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from e2e.fakes import MOUTH_BOX, FakeCharacter, FakeMixer, region_changed
from kyara.errors import KyaraError
from kyara.live import LiveEngine
from kyara.pose import NAMES
from kyara.live.session import LiveConfig
from kyara.server import create_app
from kyara.server.api import FrameHeader

EVENTS = ["wink", "surprised", "happy_nod"]
TOKEN = "s3cret-token-123"


BASE = "http://127.0.0.1:8765"   # TestClient's default Host "testserver" is not a name this server answers to
WS = BASE.replace("http", "ws", 1)  # websocket_connect ignores base_url
EVIL = "http://localhost:9999"   # another web page on this machine (issue 12.8)


def make_app(config=LiveConfig()):
    engine = LiveEngine(FakeCharacter(), FakeMixer(), fps=120)
    return create_app(engine, config, known_events=EVENTS), engine


@pytest.fixture
def client():
    app, engine = make_app()
    with TestClient(app, base_url=BASE) as c:
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
    r = client.put("/api/pose", content=iter([b"{" + b" " * 40_000, b" " * 40_000 + b"}"]),
                   headers={"content-type": "application/json"})
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
    assert client.post("/api/calibrate", json={}).status_code == 200 and client.engine.mixer.calibrations == 1
    status = client.get("/api/status").json()
    assert status["idle"]["blink"] is False and status["server"]["http_rejected"] >= 5
    assert {"fps", "latency_ms", "render_ms", "sources"} <= set(status)


def test_websocket_frames_status_and_commands(client):
    with client.websocket_connect(WS + "/ws") as ws:
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
                assert status["type"] in ("state", "status")
                if status["type"] == "status":
                    assert "fps" in status
                    got_status = True
            if got_frame and got_status:
                break
        assert got_frame and got_status
        ws.send_text(json.dumps({"type": "pose", "values": {"mouth_aaa": 0.4}}))
        ws.send_text("garbage")
        ws.send_text(json.dumps({"type": "pose", "values": {"mouth_aaa": 9}}))
        ws.send_bytes(b"\x00\x01")
        ws.send_text(json.dumps({"type": "event", "name": "surprised"}))
        # the connection keeps streaming after bad messages, each answered with an error; the good ones were applied
        errors = []
        for _ in range(80):
            msg = ws.receive()
            if msg.get("text") and json.loads(msg["text"])["type"] == "error":
                errors.append(json.loads(msg["text"])["error"])
            if len(errors) == 3 and msg.get("bytes") and FrameHeader.unpack(msg["bytes"])[1] >= 2:
                break
        else:
            raise AssertionError(f"no frame including the WebSocket inputs (errors: {errors})")
        assert "not valid JSON" in errors[0] and "mouth_aaa" in errors[1] and "binary" in errors[2]
    assert client.engine.manual == {"mouth_aaa": pytest.approx(0.4)}
    assert client.engine.mixer.events == ["surprised"]
    stats = client.get("/api/status").json()["server"]
    assert stats["ws_dropped"] == 3 and stats["ws_messages"] == 5 and stats["ws_clients"] == 0


def test_clients_come_and_go(client):
    for _ in range(5):
        with client.websocket_connect(WS + "/ws") as ws:
            assert ws.receive()  # a frame or status arrives right away
    with client.websocket_connect(WS + "/ws") as a, client.websocket_connect(WS + "/ws") as b:
        a.receive(), b.receive()
        assert client.engine.subscriber_count == 2
    assert client.get("/api/status").json()["server"]["ws_connections"] == 7


def test_token_enforced():
    app, engine = make_app(LiveConfig(token=TOKEN))
    with TestClient(app, base_url=BASE) as c:
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
            with c.websocket_connect(WS + "/ws") as ws:
                ws.receive()
        assert e.value.code == 1008
        with c.websocket_connect(WS + f"/ws?token={TOKEN}") as ws:
            assert ws.receive()


def test_bind_refused_without_token():
    for host in ("0.0.0.0", "192.168.1.20", "::"):
        with pytest.raises(KyaraError, match="requires --token"):
            LiveConfig(host=host)
    LiveConfig(host="0.0.0.0", token=TOKEN)
    LiveConfig(host="localhost")
    LiveConfig(host="::1")
    with pytest.raises(KyaraError, match="token"):
        LiveConfig(host="0.0.0.0", token="short")


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
    with client.websocket_connect(WS + "/ws") as ws:
        for msg in _fuzz_messages(rng, n_ws):
            (ws.send_bytes if isinstance(msg, bytes) else ws.send_text)(msg)
        ws.send_text(json.dumps({"type": "ping"}))
        ws.receive()
    methods = [("PUT", "/api/pose"), ("POST", "/api/event"), ("POST", "/api/preset"), ("POST", "/api/idle")]
    codes = {}

    async def http_fuzz():  # in-process ASGI transport: same app, ~4x faster than TestClient's thread portal
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as ac:
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
    with TestClient(create_app(engine), base_url=BASE) as c:
        assert c.get("/api/parameters").json()["events"] == list(REAL_EVENTS)
        r = c.post("/api/idle", json={"breathing": False, "sway": False})
        assert r.json()["idle"] == {"blink": True, "breathing": False, "sway": False}
        assert c.post("/api/event", json={"name": "wink"}).status_code == 200
        assert c.put("/api/pose", json={"mouth_aaa": 0.5}).status_code == 200
        assert engine.mixer.mix(engine.clock())["mouth_aaa"] == pytest.approx(0.5)


# -- issue 12.8: other web pages must not drive or read the studio ---------------------------------
def test_attack_websocket_from_another_page_is_refused(client):
    """A page at http://localhost:9999 opened /ws, set presets and mouth values and read frames."""
    with pytest.raises(WebSocketDisconnect) as e:
        with client.websocket_connect(WS + "/ws", headers={"origin": EVIL}) as ws:
            ws.send_text(json.dumps({"type": "preset", "name": "happy", "intensity": 1.0}))
            ws.send_text(json.dumps({"type": "pose", "values": {"mouth_aaa": 1.0}}))
            ws.receive()
    assert e.value.code == 1008
    assert client.engine.manual == {} and client.engine.mixer.preset is None
    assert client.get("/api/status").json()["server"]["ws_connections"] == 0


def test_attack_text_plain_post_is_refused(client):
    """fetch(url, {method: "POST", mode: "no-cors", body: '{"name":"wink"}'}) sends text/plain, no preflight."""
    body = b'{"name": "wink"}'
    r = client.post("/api/event", content=body, headers={"content-type": "text/plain;charset=UTF-8", "origin": EVIL})
    assert r.status_code == 403 and "--allow-origin" in r.json()["error"]
    # the same without Origin (an old browser, or a form): refused for its content type
    r = client.post("/api/event", content=body, headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["error"]
    r = client.post("/api/preset", content=b'{"name": "happy"}', headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    r = client.put("/api/pose", content=b'{"mouth_aaa": 1}')  # no content type at all
    assert r.status_code == 415
    assert client.engine.mixer.events == [] and client.engine.mixer.preset is None and client.engine.manual == {}
    assert client.get("/api/status").json()["server"]["blocked"] == 4


def test_attack_dns_rebinding_host_is_refused(client):
    """attacker.example re-resolved to 127.0.0.1: the browser sends Host: attacker.example, same-origin."""
    for path in ("/", "/api/status", "/api/pose", "/api/frame.png", "/static/studio.js"):
        r = client.get(path, headers={"host": "attacker.example:8765"})
        assert r.status_code == 421 and "attacker.example" in r.json()["error"], path
    r = client.put("/api/pose", json={"mouth_aaa": 1.0},
                   headers={"host": "attacker.example:8765", "origin": "http://attacker.example:8765"})
    assert r.status_code == 421 and client.engine.manual == {}
    with pytest.raises(WebSocketDisconnect) as e:
        with client.websocket_connect("ws://attacker.example:8765/ws",
                                      headers={"origin": "http://attacker.example:8765"}) as ws:
            ws.receive()
    assert e.value.code == 1008


def test_attack_cross_origin_reads_are_refused(client):
    for path in ("/api/status", "/api/pose", "/api/state", "/api/frame.png"):
        assert client.get(path, headers={"origin": EVIL}).status_code == 403, path
    assert client.get("/api/status", headers={"origin": "null"}).status_code == 403  # sandboxed frame, file://


def test_same_origin_loopback_names_and_scripts_are_served(client):
    same = {"origin": BASE}
    assert client.get("/api/status", headers=same).status_code == 200
    assert client.put("/api/pose", json={"mouth_aaa": 0.2}, headers=same).status_code == 200
    with client.websocket_connect(WS + "/ws", headers=same) as ws:
        assert ws.receive()
    for host in ("localhost:8765", "127.0.0.1:8765", "[::1]:8765", "127.0.0.2", "LOCALHOST:8765"):
        assert client.get("/api/status", headers={"host": host}).status_code == 200, host
    r = client.get("/api/status", headers={"host": "localhost:8765", "origin": "http://localhost:8765"})
    assert r.status_code == 200
    # a page on the same host name but another port is another origin
    r = client.get("/api/status", headers={"host": "localhost:8765", "origin": "http://localhost:8766"})
    assert r.status_code == 403


def test_allow_origin_lets_one_page_in_with_cors():
    app, engine = make_app(LiveConfig(allowed_origins=("HTTP://LocalHost:3000/",)))
    assert app.state.config.allowed_origins == ("http://localhost:3000",)
    with TestClient(app, base_url=BASE) as c:
        ok = {"origin": "http://localhost:3000"}
        preflight = c.options("/api/pose", headers={**ok, "access-control-request-method": "PUT",
                                                    "access-control-request-headers": "content-type"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
        r = c.put("/api/pose", json={"mouth_aaa": 0.5}, headers=ok)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://localhost:3000"
        with c.websocket_connect(WS + "/ws", headers=ok) as ws:
            assert ws.receive()
        assert c.get("/api/status", headers={"origin": EVIL}).status_code == 403
        assert "access-control-allow-origin" not in c.options(
            "/api/pose", headers={"origin": EVIL, "access-control-request-method": "PUT"}).headers
    for bad in ("*", "localhost:3000", "http://localhost:3000/page", "null", "ftp://x"):
        with pytest.raises(KyaraError, match="--allow-origin"):
            LiveConfig(allowed_origins=(bad,))


def test_all_interfaces_accepts_ip_literals_but_not_foreign_names():
    app, _ = make_app(LiveConfig(host="0.0.0.0", token=TOKEN))
    auth = {"authorization": f"Bearer {TOKEN}"}
    with TestClient(app, base_url=BASE) as c:
        assert c.get("/api/status", headers={**auth, "host": "192.168.1.20:8765"}).status_code == 200
        assert c.get("/api/status", headers={**auth, "host": "attacker.example"}).status_code == 421
        r = c.get("/api/status", headers={**auth, "host": "192.168.1.20:8765", "origin": "http://192.168.1.20:8765"})
        assert r.status_code == 200


# -- issue 12.9: numbers too big for a float, oversized WebSocket messages, state on connect -------
HUGE = "1" + "0" * 400  # valid JSON integer; float() of it raises OverflowError


@pytest.mark.parametrize("path, method, body", [
    ("/api/pose", "PUT", '{"mouth_aaa": %s}' % HUGE),
    ("/api/pose", "PUT", '{"mouth_aaa": -%s}' % HUGE),
    ("/api/preset", "POST", '{"name": "happy", "intensity": %s}' % HUGE),
])
def test_integer_too_big_for_a_float_is_400(client, path, method, body):
    r = client.request(method, path, content=body.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 400 and "expected a finite number, got a 401-digit number" in r.json()["error"]
    assert client.engine.manual == {} and client.engine.mixer.preset is None


def receive_json(ws, kind: str, limit: int = 100) -> dict:
    """The next text message of type `kind`, skipping frames and other messages."""
    for _ in range(limit):
        msg = ws.receive()
        if msg.get("text"):
            data = json.loads(msg["text"])
            if data["type"] == kind:
                return data
    raise AssertionError(f"no {kind!r} message in {limit} messages")


def wait_state(ws, manual: dict, limit: int = 100) -> dict:
    """The first state message whose manual layer is `manual` (earlier ones may still be queued)."""
    for _ in range(limit):
        state = receive_json(ws, "state")
        if state["manual"] == manual:
            return state
    raise AssertionError(f"no state with manual layer {manual}")


def test_oversized_websocket_message_is_dropped_with_an_error_and_the_connection_stays(client):
    with client.websocket_connect(WS + "/ws") as ws:
        ws.send_text(json.dumps({"type": "pose", "values": {"mouth_aaa": 0.5}, "pad": "x" * 70_000}))
        error = receive_json(ws, "error")
        assert "70" in error["error"] and "limit is 65536" in error["error"]
        ws.send_text(json.dumps({"type": "pose", "values": {"mouth_aaa": 0.25}}))
        wait_state(ws, {"mouth_aaa": 0.25})
    stats = client.get("/api/status").json()["server"]
    assert stats["ws_dropped"] == 1 and "limit" in stats["last_ws_error"]


def test_state_on_connect_shows_the_manual_layer_and_preset_not_the_mix(client):
    client.post("/api/preset", json={"name": "happy", "intensity": 0.5})
    client.put("/api/pose", json={"head_y": -0.25})
    expected_manual = {"head_y": -0.25}
    state = client.get("/api/state").json()
    assert state == {"manual": expected_manual, "preset": {"name": "happy", "intensity": 0.5},
                     "idle": {"blink": True, "breathing": True, "sway": True}}
    # /api/pose is the engine's latest mix: wait (bounded) for a tick after the preset was set
    deadline = time.monotonic() + 5.0
    while True:
        mixed = client.get("/api/pose").json()
        if sum(1 for v in mixed.values() if v) > 1 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert sum(1 for v in mixed.values() if v) > 1  # the preset moves more than the one slider
    with client.websocket_connect(WS + "/ws") as ws:
        first = ws.receive()  # the state comes before any frame or status
        assert json.loads(first["text"]) == {"type": "state", **state}
        # another client's change reaches this one
        client.put("/api/pose", json={"mouth_aaa": 0.75})
        assert receive_json(ws, "state")["manual"] == {"head_y": -0.25, "mouth_aaa": 0.75}
        client.delete("/api/pose")
        assert receive_json(ws, "state") == {"type": "state", "manual": {}, "preset": state["preset"], "idle": state["idle"]}


def test_oversized_message_through_uvicorn_keeps_the_connection():
    """Through the real server stack (uvicorn + websockets): a 100 KiB message used to close the
    connection with 1009 (uvicorn's ws_max_size was the 64 KiB message limit)."""
    pytest.importorskip("uvicorn")
    sync_client = pytest.importorskip("websockets.sync.client")
    from e2e.conftest import LiveServer

    with LiveServer(LiveEngine(FakeCharacter(), FakeMixer(), fps=60)) as server:
        with sync_client.connect(server.url.replace("http", "ws", 1) + "/ws", max_size=None) as ws:

            def next_json(kind):
                for _ in range(200):
                    msg = ws.recv(timeout=10)
                    if isinstance(msg, str) and json.loads(msg)["type"] == kind:
                        return json.loads(msg)
                raise AssertionError(f"no {kind} message")

            ws.send(json.dumps({"type": "ping", "pad": "x" * 100_000}))
            assert "limit is 65536" in next_json("error")["error"]
            ws.send(json.dumps({"type": "pose", "values": {"mouth_aaa": 0.5}}))
            for _ in range(50):
                if next_json("state")["manual"] == {"mouth_aaa": 0.5}:
                    break
            else:
                raise AssertionError("the pose sent after the big message was not applied")
        assert server.engine.manual == {"mouth_aaa": 0.5}


# -- browser render mode (`kyara live --render browser`, issue 14) ------------------------------------
@pytest.fixture
def browser_client():
    engine = LiveEngine(FakeCharacter(), FakeMixer(), fps=120, render="browser")
    app = create_app(engine, LiveConfig(render="browser"), known_events=EVENTS)
    with TestClient(app, base_url=BASE) as c:
        c.engine = engine
        yield c


def next_binary(ws, limit: int = 200) -> bytes:
    for _ in range(limit):
        msg = ws.receive()
        if msg.get("bytes"):
            return msg["bytes"]
    raise AssertionError(f"no binary message in {limit} messages")


def test_browser_mode_websocket_sends_pose_packets_of_the_mixed_pose_and_encodes_nothing(browser_client):
    from kyara.web.pose_packet import decode_pose_packet

    c = browser_client
    assert c.get("/api/render").json()["render"] == "browser"
    with c.websocket_connect(WS + "/ws") as ws:
        first = next_binary(ws)
        assert len(first) <= 256
        seq, inputs, pose = decode_pose_packet(first)
        assert seq >= 1 and inputs == 0 and not pose.any()
        n = c.put("/api/pose", json={"mouth_aaa": 0.75, "head_y": -0.5}).json()["input"]
        for _ in range(200):
            data = next_binary(ws)
            assert len(data) <= 256
            seq, inputs, pose = decode_pose_packet(data)
            if inputs >= n:
                break
        else:
            raise AssertionError("no packet including the slider PUT")
        # the packet holds exactly the mixer's pose (float32 of it)
        expected = c.engine.mixer.mix(0.0).vector.astype(np.float32)
        np.testing.assert_array_equal(pose, expected)
        assert pose[NAMES.index("mouth_aaa")] == np.float32(0.75)
    status = c.get("/api/status").json()
    assert status["render"] == "browser" and status["encode_ms"]["n"] == 0 and status["render_ms"]["n"] == 0
    assert c.engine.character.renders == 0 and c.engine.latest.webp == b"" and c.engine.latest.rgba is None


def test_browser_mode_page_can_ask_for_server_frames_and_frame_png_still_works(browser_client):
    c = browser_client
    with c.websocket_connect(WS + "/ws") as packets, c.websocket_connect(WS + "/ws") as frames:
        assert len(next_binary(frames)) == 192
        frames.send_text(json.dumps({"type": "frames", "on": "yes"}))
        assert "true or false" in receive_json(frames, "error")["error"]
        frames.send_text(json.dumps({"type": "frames", "on": True}))
        for _ in range(200):  # pose packets published before the request may still be queued
            data = next_binary(frames)
            if len(data) != 192:
                break
        img = Image.open(io.BytesIO(data[FrameHeader.size:]))
        assert img.format == "WEBP" and img.mode == "RGBA"
        assert len(next_binary(packets)) == 192  # the other page still gets packets only
        assert c.engine.status()["frames_wanted"] == 1 and c.engine.encode_ms.summary()["n"] >= 1
    deadline = time.monotonic() + 5
    while c.engine.status()["frames_wanted"]:  # the page left: back to poses only
        assert time.monotonic() < deadline, "the closed page's frame request was not withdrawn"
        time.sleep(0.01)
    n = c.put("/api/pose", json={"mouth_aaa": 1.0}).json()["input"]
    while not (c.engine.latest.inputs_applied >= n and c.engine.latest.rgba is None):
        assert time.monotonic() < deadline, "no pose-only publication after the page left"
        time.sleep(0.01)
    renders = c.engine.character.renders
    r = c.get("/api/frame.png")  # rendered on demand from the latest pose
    assert r.status_code == 200
    rgba = np.asarray(Image.open(io.BytesIO(r.content)))
    assert rgba.shape == (512, 512, 4) and rgba[5, 5, 3] == 0
    assert c.engine.character.renders > renders


def test_server_mode_ignores_a_frames_request_and_keeps_sending_frames(client):
    with client.websocket_connect(WS + "/ws") as ws:
        ws.send_text(json.dumps({"type": "frames", "on": False}))
        for _ in range(2):
            assert len(next_binary(ws)) > 192
    assert client.get("/api/render").json() == {"render": "server", "shapes": None}
    assert client.engine.status()["frames_wanted"] == 0


def test_render_flag_is_validated():
    with pytest.raises(KyaraError, match="--render must be one of server, browser"):
        LiveConfig(render="gpu")
    with pytest.raises(KyaraError, match="--render browser needs a distilled student"):
        LiveConfig(render="browser", teacher=True)
    with pytest.raises(ValueError, match="render must be one of"):
        LiveEngine(FakeCharacter(), FakeMixer(), render="gpu")
