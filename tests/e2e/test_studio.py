"""Headless-Chromium checks of the studio and OBS pages against a live server (fake character that
draws pose-dependent pixels into known regions, so "the right region changed" is exact)."""
from __future__ import annotations

import base64
import os
from pathlib import Path

import numpy as np
import pytest

from e2e.fakes import CORNER_BOX, HEAD_BOX, MOUTH_BOX

pytestmark = pytest.mark.e2e

# base64 keeps the 1 MiB pixel transfer fast (a JS array of 10^6 numbers takes a minute to serialize)
READ_CANVAS = """() => {
  const c = document.getElementById('frame');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let s = '';
  for (let i = 0; i < d.length; i += 0x8000) s += String.fromCharCode.apply(null, d.subarray(i, i + 0x8000));
  return {w: c.width, h: c.height, seq: Number(c.dataset.seq || 0), b64: btoa(s)};
}"""


def canvas_rgba(page) -> tuple[np.ndarray, int]:
    r = page.evaluate(READ_CANVAS)
    data = np.frombuffer(base64.b64decode(r["b64"]), np.uint8)
    return data.reshape(r["h"], r["w"], 4), r["seq"]


def wait_new_frame(page, after_seq: int, timeout_ms: int = 10_000) -> None:
    page.wait_for_function(f"() => Number(document.getElementById('frame').dataset.seq || 0) > {after_seq}",
                           timeout=timeout_ms)


def changed(a: np.ndarray, b: np.ndarray, box) -> float:
    t, bottom, l, r = box
    return float(np.mean(np.abs(a[t:bottom, l:r].astype(int) - b[t:bottom, l:r].astype(int)).max(-1) > 24))


def set_slider(page, name: str, value: float) -> None:
    page.evaluate("""([name, value]) => {
      const s = document.querySelector(`input[data-name="${name}"]`);
      s.value = value; s.dispatchEvent(new Event('input', {bubbles: true}));
    }""", [name, value])


def open_page(browser, url: str, ready_timeout_ms: int = 10_000, ready: str = "body[data-ready='1']"):
    """A new 1280×900 page at url, once `ready` matches; returns (page, list collecting page errors)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_selector(ready, timeout=ready_timeout_ms)
    return page, errors


def test_studio_loads_and_mouth_slider_changes_mouth_region(browser, live_server):
    page, errors = open_page(browser, live_server.url + "/")
    assert page.locator("input[type=range][data-name]").count() == 45
    assert page.locator("#presets button").count() >= 5
    assert page.locator("#events button").count() == 3
    wait_new_frame(page, 0)
    page.wait_for_function("() => document.getElementById('fps').textContent !== '–'", timeout=10_000)
    before, seq = canvas_rgba(page)
    assert before[256, 256, 3] == 255 and before[5, 5, 3] == 0

    set_slider(page, "mouth_aaa", 1.0)
    page.wait_for_function("() => Number(document.getElementById('frame').dataset.inputs || 0) >= 1", timeout=10_000)
    after, _ = canvas_rgba(page)
    assert changed(before, after, MOUTH_BOX) > 0.2, "mouth slider did not change the mouth region"
    assert changed(before, after, (0, 280, 0, 512)) < 0.01, "mouth slider changed pixels above the mouth"

    set_slider(page, "head_y", 0.8)
    page.wait_for_function("() => Number(document.getElementById('frame').dataset.inputs || 0) >= 2", timeout=10_000)
    turned, _ = canvas_rgba(page)
    assert changed(after, turned, HEAD_BOX) > 0.1
    assert changed(after, turned, MOUTH_BOX) < 0.01
    assert live_server.engine.manual == pytest.approx({"mouth_aaa": 1.0, "head_y": 0.8})

    # preset and event buttons reach the mixer
    page.click("#presets button[data-preset='happy']")
    page.click("#events button[data-event='wink']")
    page.wait_for_function("() => Number(document.getElementById('frame').dataset.inputs || 0) >= 4", timeout=10_000)
    assert live_server.engine.mixer.preset == ("happy", 1.0)
    assert live_server.engine.mixer.events == ["wink"]

    shots = os.environ.get("KYARA_E2E_SCREENSHOTS")
    if shots:
        page.screenshot(path=str(Path(shots) / "studio.png"), full_page=True)
    assert not errors, errors
    page.close()


def test_obs_page_has_transparent_pixels(browser, live_server):
    page = browser.new_page(viewport={"width": 512, "height": 512})
    page.goto(live_server.url + "/obs")
    wait_new_frame(page, 0)
    rgba, _ = canvas_rgba(page)
    assert rgba.shape == (512, 512, 4)
    t, b, l, r = CORNER_BOX
    assert (rgba[t:b, l:r, 3] == 0).all(), "OBS frame corner is not transparent"
    assert (rgba[:, :, 3] == 0).mean() > 0.2 and (rgba[:, :, 3] == 255).mean() > 0.2
    bg = page.evaluate("() => [getComputedStyle(document.body).backgroundColor, "
                       "getComputedStyle(document.documentElement).backgroundColor]")
    assert all(c in ("rgba(0, 0, 0, 0)", "transparent") for c in bg), bg
    assert page.locator("input, button").count() == 0  # no UI on the OBS page
    page.close()


def test_token_protected_studio_works_with_query_token(browser):
    pytest.importorskip("uvicorn")
    from e2e.conftest import LiveServer
    from e2e.fakes import FakeCharacter, FakeMixer
    from kyara.live import LiveEngine
    from kyara.live.session import LiveConfig

    token = "e2e-token-123456"
    with LiveServer(LiveEngine(FakeCharacter(), FakeMixer(), fps=30), LiveConfig(port=0, token=token)) as server:
        page = browser.new_page()
        assert page.goto(server.url + "/").status == 401
        page.goto(server.url + f"/?token={token}")
        page.wait_for_selector("body[data-ready='1']", timeout=10_000)
        wait_new_frame(page, 0)
        assert page.get_attribute("#obs-link", "href") == f"/obs?token={token}"
        page.close()


def slider_values(page) -> dict:
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('input[data-name]')]
                            .map(s => [s.dataset.name, Number(s.value)]))""")


def test_sliders_show_the_manual_layer_not_the_mixed_pose(browser, live_server):
    """Issue 12.9: the sliders started from GET /api/pose, i.e. showed preset and tracker values."""
    import json
    import urllib.request

    def call(method, path, body):
        req = urllib.request.Request(live_server.url + path, data=json.dumps(body).encode(), method=method,
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=10).read()

    call("POST", "/api/preset", {"name": "happy", "intensity": 1.0})
    call("PUT", "/api/pose", {"head_y": -0.25})
    import time
    deadline = time.monotonic() + 10
    while True:  # GET /api/pose is the pose the render loop read last
        with urllib.request.urlopen(live_server.url + "/api/pose", timeout=10) as r:
            mixed = json.loads(r.read())
        if mixed["head_y"] == pytest.approx(-0.25) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    preset_only = [k for k, v in mixed.items() if v and k != "head_y"]
    assert preset_only  # the happy preset moves other parameters in the mix
    page, errors = open_page(browser, live_server.url + "/")
    values = slider_values(page)
    assert values["head_y"] == pytest.approx(-0.25, abs=0.01)
    assert all(values[k] == 0 for k in preset_only), {k: values[k] for k in preset_only}
    assert page.locator("#presets button.active").get_attribute("data-preset") == "happy"
    assert page.locator(".slider-row.set").count() == 1
    # another client's change shows up here too
    call("PUT", "/api/pose", {"mouth_aaa": 0.5})
    page.wait_for_function("() => Number(document.querySelector('input[data-name=mouth_aaa]').value) === 0.5",
                           timeout=10_000)
    assert not errors, errors
    page.close()


def test_page_takes_the_state_of_a_restarted_server(browser):
    """After a server restart the page reconnects and shows the new server's manual layer and preset,
    not the sliders it had before."""
    import socket

    from e2e.conftest import LiveServer
    from e2e.fakes import FakeCharacter, FakeMixer
    from kyara.live import LiveEngine
    from kyara.live.session import LiveConfig

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = LiveConfig(port=port)
    with LiveServer(LiveEngine(FakeCharacter(), FakeMixer(), fps=30), config) as first:
        page, errors = open_page(browser, first.url + "/")
        wait_new_frame(page, 0)
        set_slider(page, "mouth_aaa", 0.8)
        page.click("#presets button[data-preset='happy']")
        page.wait_for_function("() => Number(document.getElementById('frame').dataset.inputs || 0) >= 2",
                               timeout=10_000)
        assert first.engine.manual == pytest.approx({"mouth_aaa": 0.8})
    page.wait_for_selector("#conn.off", timeout=10_000)
    second_engine = LiveEngine(FakeCharacter(), FakeMixer(), fps=30)
    second_engine.set_manual({"eye_wink_left": 0.5})
    with LiveServer(second_engine, config):
        page.wait_for_selector("#conn.on", timeout=15_000)
        page.wait_for_function("() => Number(document.querySelector('input[data-name=eye_wink_left]').value) === 0.5",
                               timeout=10_000)
        values = slider_values(page)
        assert values["mouth_aaa"] == 0 and values["eye_wink_left"] == 0.5
        assert page.locator("#presets button.active").count() == 0  # the new server has no preset
        assert page.locator(".slider-row.set").count() == 1
        assert second_engine.manual == {"eye_wink_left": 0.5}  # the page did not push its old sliders back
    assert not errors, errors
    page.close()
