"""The browser student (server/static/render/*) in headless Chromium against the PyTorch student on the
bundled character (acceptance: PSNR >= 45 dB on 8-bit RGBA), and the viewer page's fallbacks.

WebGL2 and WebGPU run on Chromium's SwiftShader (software): the real student takes ~50-130 s a frame
on the shared 2-core machine, so its tests are marked slow; the fast tests run the same page code on
a tiny random student (kyara.web.poses.tiny_character). Measured on the real student (2026-12-04):
float32 weights 64.1 dB in both WebGL2 and WebGPU (SwiftShader's sin is the limit), float16 weights as
shipped: see docs/benchmarks.md, "Browser renderer (issue 14)".
"""
from __future__ import annotations

import base64
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from kyara.character import SAMPLE_CHARACTER, load_character
from kyara.image import tensor_to_rgba_u8
from kyara.web.poses import exactness_poses, tiny_character
from kyara.web.weights import student_tensors, student_to_web_bytes

pytestmark = pytest.mark.e2e
RENDER_DIR = Path(__file__).resolve().parents[2] / "src" / "kyara" / "server" / "static" / "render"
SCRIPTS = ("kyw.js", "plan.js", "student_webgl2.js", "student_webgpu.js", "renderer.js", "pose_packet.js")
GPU_ARGS = ["--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--enable-unsafe-webgpu", "--enable-features=Vulkan",
            "--use-vulkan=swiftshader", "--use-angle=swiftshader"]
ACCEPT_PSNR_DB = 45.0
FRAME_TIMEOUT_MS = 600_000
HARNESS = ("<!doctype html><html><body><div id=stage></div>"
           + "".join(f"<script src='/render/{name}'></script>" for name in SCRIPTS) + "</body></html>")

# page side: start a backend on /weights.kyw, then render a pose and return base64 RGBA
START_JS = """async ([backend, shapes, student]) => {
  const R = self.kyaraRender;
  const weights = await R.fetchWeights('/weights.kyw');
  const wgsl = await (await fetch('/render/student.wgsl')).text();
  self.renderer = await R.start({ weights, wgslSource: wgsl, container: document.getElementById('stage'), prefer: backend,
                                  shapes, student });
  return [self.renderer.backend, self.renderer.adapterInfo, self.renderer.student];
}"""
RENDER_JS = """async (pose) => {
  const px = await self.renderer.render(pose);
  let s = '';
  for (let i = 0; i < px.length; i += 32768) s += String.fromCharCode.apply(null, px.subarray(i, i + 32768));
  return btoa(s);
}"""


def psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.fixture(scope="module")
def character():
    return load_character(SAMPLE_CHARACTER)


@pytest.fixture(scope="module")
def kyw(character):
    return student_to_web_bytes(character)


@pytest.fixture(scope="module")
def tiny():
    return tiny_character()


@pytest.fixture(scope="module")
def gpu_browser(browser):
    """Chromium with WebGPU and SwiftShader Vulkan enabled (the session browser runs with --disable-gpu)."""
    b = browser.browser_type.launch(executable_path=browser_executable(), headless=True, args=GPU_ARGS)
    yield b
    b.close()


def browser_executable() -> str:
    from e2e.conftest import chromium_path

    return chromium_path()


def open_harness(b, weights: bytes):
    """A page on https://app.test (a secure context: WebGPU allowed) serving render/* and the weights."""
    page = b.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    def handle(route):
        name = route.request.url.split("https://app.test/", 1)[1].split("?")[0]
        if name == "index.html":
            return route.fulfill(body=HARNESS, content_type="text/html")
        if name == "weights.kyw":
            return route.fulfill(body=weights, content_type="application/octet-stream")
        if name.startswith("render/") and (RENDER_DIR / name[7:]).is_file():
            return route.fulfill(path=str(RENDER_DIR / name[7:]))
        return route.fulfill(status=404, body="not found")

    page.route("https://app.test/**", handle)
    page.goto("https://app.test/index.html")
    return page, errors


def render_in_page(page, pose: np.ndarray) -> np.ndarray:
    data = base64.b64decode(page.evaluate(RENDER_JS, [float(v) for v in pose]))
    return np.frombuffer(data, np.uint8).reshape(512, 512, 4)


def reference(character, pose: np.ndarray) -> np.ndarray:
    return tensor_to_rgba_u8(character.render(torch.from_numpy(pose)[None])[0])


def check(gpu_browser, character, backend: str, poses: np.ndarray, student: str = "full",
          page_shapes: bool = False) -> list[float]:
    """PSNR of the page's student (full, or lite against the PyTorch LiteStudent: pass a character
    whose poser is one) against PyTorch on poses. page_shapes: the page's own shape check (what the
    studio runs: the shapes the file's body declares) instead of the character's exact shapes."""
    page, errors = open_harness(gpu_browser, student_to_web_bytes(character))
    page.set_default_timeout(FRAME_TIMEOUT_MS)
    shapes = None if page_shapes else {**{k: list(v.shape) for k, v in student_tensors(character).items()},
                                       "character_image": [512, 512, 4]}
    used, adapter, used_student = page.evaluate(START_JS, [backend, shapes, student])
    assert used == backend, f"asked for {backend}, got {used} ({adapter})"
    assert used_student == student
    scores = []
    outside = ~character.poser.region.numpy()
    for pose in poses:
        out = render_in_page(page, pose)
        ref = reference(character, pose)
        scores.append(psnr_u8(out, ref))
        # outside the student's region: the input, untouched (identical bytes)
        assert (out[outside] == ref[outside]).all(axis=-1).mean() > 0.9999
    assert not errors, errors
    page.close()
    assert min(scores) >= ACCEPT_PSNR_DB, [round(s, 2) for s in scores]
    return scores


@pytest.mark.parametrize("backend", ["webgl2", "webgpu"])
def test_tiny_student_in_chromium_matches_pytorch(gpu_browser, tiny, backend):
    """Every pass of the page's renderer (both backends) on a small random student, in seconds."""
    check(gpu_browser, tiny, backend, exactness_poses(5)[3:5])


def test_a_student_of_other_body_widths_passes_the_pages_own_check_and_renders(gpu_browser):
    """kyara distill --body-widths: the page reads the body's shape off the weights (plan.js bodyShapeOf)."""
    import torch

    from kyara.character import Character
    from kyara.student import BodyMorpher, FaceMorpher, Student
    from kyara.student.body_morpher import levels_for_widths

    sample = load_character(SAMPLE_CHARACTER)
    torch.manual_seed(1)
    student = Student(FaceMorpher(), BodyMorpher(levels_for_widths((24, 16, 8))), region=sample.poser.region)
    with torch.no_grad():
        student.body_morpher.last_linear.weight.mul_(0.05)
    check(gpu_browser, Character("narrow", sample.image, student.eval(), "none"), "webgl2", exactness_poses(5)[4:5],
          page_shapes=True)


@pytest.mark.slow
def test_webgl2_matches_pytorch_student_on_one_pose(gpu_browser, character):
    check(gpu_browser, character, "webgl2", exactness_poses(3)[2:3])


@pytest.mark.slow
def test_webgl2_matches_pytorch_student_on_20_poses(gpu_browser, character):
    check(gpu_browser, character, "webgl2", exactness_poses(20))


@pytest.mark.slow
def test_webgpu_in_chromium_matches_pytorch_student(gpu_browser, character):
    check(gpu_browser, character, "webgpu", exactness_poses(2))


# -- the lite student (kyara.student.lite) in the page ---------------------------------------------------
@pytest.fixture(scope="module")
def lite_character():
    from kyara.student.lite import use_student

    return use_student(load_character(SAMPLE_CHARACTER), "lite")


@pytest.mark.parametrize("backend", ["webgl2", "webgpu"])
def test_tiny_lite_student_in_chromium_matches_pytorch_lite(gpu_browser, backend):
    from kyara.student.lite import use_student

    check(gpu_browser, use_student(tiny_character(), "lite"), backend, exactness_poses(5)[3:5], student="lite")


@pytest.mark.slow
def test_lite_student_in_webgl2_matches_pytorch_lite_student(gpu_browser, lite_character):
    """The real lite student (coarse body, movable face pixels) in WebGL2 on SwiftShader: a turned preset
    (~50 s with the page load and the face plan on the shared CPU)."""
    check(gpu_browser, lite_character, "webgl2", exactness_poses(3)[2:3], student="lite")


@pytest.mark.slow
def test_lite_student_in_webgl2_matches_pytorch_lite_student_on_20_poses(gpu_browser, lite_character):
    check(gpu_browser, lite_character, "webgl2", exactness_poses(20), student="lite")


@pytest.mark.slow
def test_lite_student_in_webgpu_matches_pytorch_lite_student(gpu_browser, lite_character):
    check(gpu_browser, lite_character, "webgpu", exactness_poses(3), student="lite")


def corrupt(kyw: bytes, how: str) -> bytes:
    if how == "version":
        return kyw[:4] + struct.pack("<I", 7) + kyw[8:]
    if how == "truncated":
        return kyw[:-4096]
    if how == "magic":
        return b"GIF8" + kyw[4:]
    raise ValueError(how)


@pytest.mark.parametrize("how, message", [
    ("version", "format version 7 is not supported"),
    ("truncated", "sizes disagree"),
    ("magic", "not a kyara browser weights file"),
])
def test_page_refuses_bad_weights_with_a_clear_message(gpu_browser, kyw, how, message):
    page, _ = open_harness(gpu_browser, corrupt(kyw, how))
    error = page.evaluate("""async () => {
      try { await self.kyaraRender.start({ weights: await self.kyaraRender.fetchWeights('/weights.kyw'),
                                           wgslSource: null, container: document.getElementById('stage') });
            return null; }
      catch (e) { return [e.constructor.name, e.message]; } }""")
    assert error is not None and error[0] == "KywError" and message in error[1], error
    page.close()


def test_page_refuses_oversized_weights_before_parsing(gpu_browser, kyw):
    page, _ = open_harness(gpu_browser, kyw)
    error = page.evaluate("""() => {
      try { self.kyaraRender.parseKyw(new ArrayBuffer(33 << 20)); return null; }
      catch (e) { return [e.constructor.name, e.message]; } }""")
    assert error is not None and error[0] == "KywError" and "more than the 33554432 allowed" in error[1], error
    page.close()


def test_page_decodes_pose_packets_from_python(gpu_browser, kyw):
    from kyara.pose import Pose
    from kyara.web.pose_packet import encode_pose_packet

    pose = Pose.preset("surprised").vector
    page, _ = open_harness(gpu_browser, kyw)
    data = list(encode_pose_packet(41, 9, pose))
    decoded = page.evaluate("""(bytes) => { const R = self.kyaraRender, buf = new Uint8Array(bytes).buffer;
      const p = R.decodePosePacket(buf);
      let bad = null; try { R.decodePosePacket(buf.slice(0, 100)); } catch (e) { bad = e.message; }
      return [R.isPosePacket(buf), p.seq, p.inputs, Array.from(p.pose), bad]; }""", data)
    assert decoded[:3] == [True, 41, 9]
    np.testing.assert_array_equal(np.float32(decoded[3]), pose.astype(np.float32))
    assert "192 bytes" in decoded[4]
    page.close()


def test_viewer_without_webgl_or_webgpu_falls_back_to_server_frames(browser, live_server, kyw):
    """No WebGL (flags) and no WebGPU (no --enable-unsafe-webgpu): server frames and a visible notice."""
    b = browser.browser_type.launch(executable_path=browser_executable(), headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-webgl", "--disable-webgl2"])
    try:
        page = b.new_page()
        page.route("**/api/character", lambda route: route.fulfill(body=kyw, content_type="application/octet-stream"))
        page.goto(live_server.url + "/static/render/viewer.html")
        page.wait_for_function("() => document.body.dataset.state === 'server-frames'", timeout=30_000)
        notice = page.locator("#notice")
        assert notice.is_visible()
        assert "rendered by the server" in notice.inner_text() and "cannot run the renderer" in notice.inner_text()
        page.wait_for_function("() => Number(document.getElementById('frame').dataset.seq || 0) > 0", timeout=30_000)
    finally:
        b.close()


def test_viewer_with_bad_weights_says_why_and_shows_server_frames(gpu_browser, live_server, kyw):
    page = gpu_browser.new_page()
    page.route("**/api/character", lambda route: route.fulfill(body=corrupt(kyw, "version"),
                                                               content_type="application/octet-stream"))
    page.goto(live_server.url + "/static/render/viewer.html")
    page.wait_for_function("() => document.body.dataset.state === 'server-frames'", timeout=30_000)
    text = page.locator("#notice").inner_text()
    assert "weights were refused" in text and "version 7 is not supported" in text, text
    page.close()


@pytest.mark.slow
def test_viewer_renders_the_student_in_the_browser(gpu_browser, live_server, kyw):
    """The live server's /static/render/viewer.html: weights from /api/character (here the bundled
    student, routed: the e2e server's fake character is not a student), poses from /api/pose, frames
    drawn by WebGL2 in the page, no notice."""
    page = gpu_browser.new_page()
    page.route("**/api/character", lambda route: route.fulfill(body=kyw, content_type="application/octet-stream"))
    page.goto(live_server.url + "/static/render/viewer.html?render=webgl2")
    page.wait_for_function("() => Number(document.getElementById('stage').dataset.frames || 0) >= 1",
                           timeout=FRAME_TIMEOUT_MS)
    assert page.evaluate("() => [document.body.dataset.state, document.body.dataset.backend]") == ["browser", "webgl2"]
    assert page.locator("#notice").inner_text() == ""
    page.close()


# -- the page's full/lite choice (render/renderer.js, student 'auto') ------------------------------------
AUTO_JS = """async ([interval, fullMs, liteMs]) => {
  const R = self.kyaraRender;
  // stand-in backend with set draw times, and a display of the given frame interval
  R.displayInterval = async () => interval;
  R.createWebGL2 = (plan, canvas) => ({
    backend: 'webgl2', adapterInfo: 'stand-in', plan,
    async draw() { await new Promise(r => setTimeout(r, plan.lite ? liteMs : fullMs)); },
    async render() { return new Uint8ClampedArray(4); }, destroy() {} });
  const r = await R.start({ weights: await R.fetchWeights('/weights.kyw'), wgslSource: null,
                            container: document.getElementById('stage'), prefer: 'webgl2', student: 'auto',
                            shapes: {} });   // the tiny student: no shape check
  const first = r.student;
  for (let i = 0; i < 20; i++) await r.draw(new Array(45).fill(0));
  return [first, r.student, r.switches, r.canvas === document.getElementById('stage').firstChild];
}"""


@pytest.mark.parametrize("full_ms, final, switches", [
    (5, "full", ["lite->full"]),                  # full keeps up with the display: it stays
    (300, "lite", ["lite->full", "full->lite"]),  # full misses the display: back to lite, for good
])
def test_auto_student_upgrades_to_full_only_when_it_keeps_up(gpu_browser, tiny, full_ms, final, switches):
    """Without hardware WebGPU the page starts with the lite student; lite's timed draws (2-5 ms) × the
    work ratio (4.0 for the tiny student's plans) predict full fits a 200 ms frame, so it tries full and
    keeps it only if full's own draws fit."""
    page, errors = open_harness(gpu_browser, student_to_web_bytes(tiny))
    first, student, made, shown = page.evaluate(AUTO_JS, [200, full_ms, 2])
    assert (first, student, made, shown) == ("lite", final, switches, True)
    assert not errors, errors
    page.close()


def test_auto_student_stays_lite_when_even_the_prediction_misses(gpu_browser, tiny):
    page, _ = open_harness(gpu_browser, student_to_web_bytes(tiny))
    first, student, made, _ = page.evaluate(AUTO_JS, [10, 5, 50])   # lite alone misses a 10 ms frame
    assert (first, student, made) == ("lite", "lite", [])
    page.close()
