"""`kyara live --render browser` in headless Chromium: the studio and /obs pages fetch the student
once (/api/character), get 192-byte pose packets over the WebSocket and draw them with the page's
renderer (WebGL2 on SwiftShader here); a page that cannot render says so and gets server frames.

The real student takes ~1 minute a frame on this CPU-only machine's software GPU, so these run the
tiny random student (kyara.web.poses.tiny_character): same passes, ~1 % of the work.
"""
from __future__ import annotations

import numpy as np
import pytest

from e2e.test_studio import canvas_rgba, open_page, set_slider
from e2e.test_web_render import GPU_ARGS, browser_executable, psnr_u8
from kyara.pose import Pose

pytestmark = pytest.mark.e2e
DRAW_TIMEOUT_MS = 120_000   # a tiny-student frame on SwiftShader takes a few seconds on the shared CPU


@pytest.fixture(scope="module")
def gpu_browser(browser):
    b = browser.browser_type.launch(executable_path=browser_executable(), headless=True, args=GPU_ARGS)
    yield b
    b.close()


@pytest.fixture(scope="module")
def tiny():
    from kyara.web.poses import tiny_character

    return tiny_character()


@pytest.fixture
def browser_server(tiny):
    pytest.importorskip("uvicorn")
    from e2e.conftest import LiveServer
    from e2e.fakes import FakeMixer
    from kyara.live import LiveEngine
    from kyara.live.session import LiveConfig

    engine = LiveEngine(tiny, FakeMixer(), fps=30, render="browser")
    with LiveServer(engine, LiveConfig(port=0, render="browser")) as server:
        yield server


def wait_drawn(page, count: int) -> None:
    page.wait_for_function(f"() => document.body.dataset.render === 'browser' && "
                           f"window.kyaraConn && window.kyaraConn.render.drawn >= {count}", timeout=DRAW_TIMEOUT_MS)


EXPOSE_CONN = "() => { window.kyaraConn = window.kyaraStudio.conn; }"


def test_studio_draws_pose_packets_locally_and_a_slider_changes_the_canvas(gpu_browser, browser_server):
    page, errors = open_page(gpu_browser, browser_server.url + "/?render=webgl2", ready_timeout_ms=30_000)
    page.evaluate(EXPOSE_CONN)
    wait_drawn(page, 1)
    assert page.evaluate("() => document.getElementById('frame').dataset.backend") == "webgl2"
    assert page.locator("#render-notice").is_hidden()
    before, _ = canvas_rgba(page)
    reference = browser_server.engine.character.render_rgba(Pose())  # the same student in PyTorch
    # the page's 2D canvas stores premultiplied colour, so translucent edge pixels lose precision on the
    # way back out (measured 2026-12-04: 40.7 dB overall, 61.4 dB where alpha >= 240)
    opaque = reference[..., 3] >= 240
    assert psnr_u8(before, reference) >= 35 and psnr_u8(before[opaque], reference[opaque]) >= 50
    assert before[5, 5, 3] == 0 and before[300, 256, 3] > 200  # transparent corner, opaque body

    for name, value in (("head_y", 1.0), ("body_y", 1.0), ("mouth_aaa", 1.0)):
        set_slider(page, name, value)
    page.wait_for_function("() => Number(document.getElementById('frame').dataset.inputs || 0) >= 1 && "
                           "window.kyaraConn.render.drawn >= 2", timeout=DRAW_TIMEOUT_MS)
    # one WebSocket message carries all three (the studio sends at most one per animation frame)
    after, _ = canvas_rgba(page)
    moved = float(np.mean(np.abs(before.astype(int) - after.astype(int)).max(-1) > 8))
    assert moved > 0.001, f"only {moved:.5f} of the pixels changed"
    status = browser_server.engine.status()
    assert status["render"] == "browser" and status["encode_ms"]["n"] == 0 and status["render_ms"]["n"] == 0
    assert not errors, errors
    page.close()


def test_obs_page_in_browser_mode_is_transparent(gpu_browser, browser_server):
    page = gpu_browser.new_page(viewport={"width": 512, "height": 512})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(browser_server.url + "/obs?render=webgl2")
    page.wait_for_function("() => document.body.dataset.render === 'browser' && "
                           "Number(document.getElementById('frame').dataset.seq || 0) > 0", timeout=DRAW_TIMEOUT_MS)
    rgba, _ = canvas_rgba(page)
    assert rgba.shape == (512, 512, 4)
    assert (rgba[:40, :40, 3] == 0).all() and rgba[300, 256, 3] > 200
    assert page.evaluate("() => getComputedStyle(document.body).backgroundColor") == "rgba(0, 0, 0, 0)"
    assert page.locator("#render-notice").is_hidden()
    assert browser_server.engine.encode_ms.summary()["n"] == 0
    assert not errors, errors
    page.close()


def test_studio_without_webgl_or_webgpu_says_so_and_shows_server_frames(browser, browser_server):
    b = browser.browser_type.launch(executable_path=browser_executable(), headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-webgl", "--disable-webgl2"])
    try:
        page, errors = open_page(b, browser_server.url + "/", ready_timeout_ms=30_000)
        page.wait_for_function("() => document.body.dataset.render === 'server-frames' && "
                               "Number(document.getElementById('frame').dataset.seq || 0) > 0", timeout=60_000)
        notice = page.locator("#render-notice")
        assert notice.is_visible()
        assert "rendered by the server" in notice.inner_text() and "cannot run the renderer" in notice.inner_text()
        rgba, _ = canvas_rgba(page)
        assert rgba[5, 5, 3] == 0 and rgba[300, 256, 3] > 200
        assert browser_server.engine.status()["frames_wanted"] == 1
        assert not errors, errors
    finally:
        b.close()
