"""Live latency including the page's draw (issue 14): pose sent → frame presented, measured inside the
studio page in headless Chromium, browser rendering vs `--render server` in the same run.

For each mode the server runs in a subprocess (benchmarks/live_latency.py --serve: the real engine,
PoseMixer with idle motion off, create_app under uvicorn, loopback) and one studio page drives it.
Each sample, inside the page (one clock, performance.now()):
  t0        the page sends PUT /api/pose {mouth_aaa: v} (v alternates, so every sample changes the pose);
            its answer carries the input number n
  drawn     the page's canvas shows a frame whose inputs-applied count is >= n: in browser mode after
            the page's own renderer drew the pose packet (WebGL2: a fence, i.e. the GPU finished) and
            copied it onto the canvas; in server mode after the WebP frame was decoded and drawn
  presented the first requestAnimationFrame callback after that (the frame the compositor shows next)
Samples are taken one at a time with a random 0-50 ms pause between them (any phase of the 60 Hz tick).

    PYTHONPATH=src python benchmarks/web_page_latency.py --character sample --student lite --samples 20
    PYTHONPATH=src python benchmarks/web_page_latency.py --character tiny --samples 40   # pipeline, tiny draw

Chromium: Debian's (/usr/bin/chromium or $KYARA_CHROMIUM) through Playwright, WebGL2/WebGPU on
SwiftShader unless --gpu-args says otherwise: on a machine without a GPU the browser's draw is
software rendering, and that is what this measures there. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import live_latency  # noqa: E402  (its --serve server process and start/stop helpers)

SWIFTSHADER_ARGS = ["--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--enable-unsafe-webgpu",
                    "--enable-features=Vulkan", "--use-vulkan=swiftshader", "--use-angle=swiftshader"]

SAMPLE_JS = """async (value) => {
  const canvas = document.getElementById('frame');
  const t0 = performance.now();
  const answer = await kyara.apiFetch('/api/pose', { method: 'PUT', body: JSON.stringify({ mouth_aaa: value }) });
  const n = (await answer.json()).input;
  const tPut = performance.now();
  await new Promise(resolve => {
    const ok = () => Number(canvas.dataset.inputs || 0) >= n;
    if (ok()) { resolve(); return; }
    const watch = new MutationObserver(() => { if (ok()) { watch.disconnect(); resolve(); } });
    watch.observe(canvas, { attributes: true, attributeFilter: ['data-inputs'] });
  });
  const tDrawn = performance.now();
  await new Promise(resolve => requestAnimationFrame(() => resolve()));
  const r = kyara && window.kyaraStudio.conn.render;
  return { put: tPut - t0, drawn: tDrawn - t0, presented: performance.now() - t0,
           draw: document.body.dataset.render === 'browser' ? r.drawMs : null };
}"""


def chromium_path() -> str:
    for candidate in (os.environ.get("KYARA_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if candidate and os.path.exists(candidate):
            return candidate
    raise SystemExit("no Chromium (apt-get install chromium, or set KYARA_CHROMIUM)")


def server_args(args, render: str) -> argparse.Namespace:
    return argparse.Namespace(character=args.character, device="cpu", fps=args.fps, encoders=args.encoders,
                              student=args.student, render=render, threads=args.threads, no_idle=True,
                              uvicorn_ws="auto")


def measure(browser, args, render: str) -> dict:
    proc, info = live_latency.start_server(server_args(args, render))
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.set_default_timeout(args.timeout_s * 1000)
        page.goto(f"http://127.0.0.1:{info['port']}/?render={args.backend}&student={args.page_student}")
        page.wait_for_selector("body[data-ready='1']")
        if render == "browser":
            page.wait_for_function("() => document.body.dataset.render === 'browser' && "
                                   "window.kyaraStudio.conn.render.drawn >= 1")
        else:
            page.wait_for_function("() => Number(document.getElementById('frame').dataset.seq || 0) > 0")
        where = page.evaluate("() => [document.body.dataset.render, window.kyaraStudio.conn.render.backend, "
                              "window.kyaraStudio.conn.render.student]")
        rng = random.Random(14)
        samples = []
        for i in range(args.warmup + args.samples):
            value = 0.25 + 0.75 * (i % 2)
            result = page.evaluate(SAMPLE_JS, value)
            if i >= args.warmup:
                samples.append(result)
            time.sleep(rng.uniform(0.0, 0.05))
        page.close()
        if errors:
            raise SystemExit(f"page errors: {errors}")
    finally:
        live_latency.stop_server(proc)
    return {"render": render, "page": where, "samples": samples}


def row(r: dict) -> str:
    def stat(key):
        values = np.array([s[key] for s in r["samples"] if s[key] is not None], float)
        if not values.size:
            return "–"
        return f"{np.percentile(values, 50):.1f} / {np.percentile(values, 99):.1f}"

    mode, backend, student = r["page"]
    where = (f"browser: the page draws ({backend}, {student} student)" if mode == "browser"
             else "server: WebP frames (--render server)")
    return (f"| {where} | {stat('presented')} | {stat('drawn')} | {stat('put')} | {stat('draw')} | "
            f"{len(r['samples'])} |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--character", default="sample", help="sample | tiny | random | a .kyara path (live_latency.py's)")
    ap.add_argument("--student", default="lite", choices=["auto", "lite", "full"],
                    help="the server's student (server mode renders with it; kyara.student.lite.use_student)")
    ap.add_argument("--page-student", default="lite", choices=["auto", "lite", "full"],
                    help="the page's student in browser mode (?student=)")
    ap.add_argument("--backend", default="webgl2", choices=["auto", "webgl2", "webgpu"], help="the page's ?render=")
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--fps", type=float, default=60.0)
    ap.add_argument("--encoders", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads in the server")
    ap.add_argument("--timeout-s", type=float, default=600.0, help="longest wait for one step")
    ap.add_argument("--modes", default="server,browser", help="which modes, in order")
    ap.add_argument("--gpu-args", default=None,
                    help="Chromium flags instead of the SwiftShader ones (comma-separated), e.g. on a GPU machine")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    flags = args.gpu_args.split(",") if args.gpu_args else SWIFTSHADER_ARGS
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True, args=flags)
        try:
            results = [measure(browser, args, mode) for mode in args.modes.split(",")]
            version = browser.version
        finally:
            browser.close()
    print(f"Character {args.character}, server student {args.student}; Chromium {version} headless, "
          f"{'SwiftShader (software)' if not args.gpu_args else 'flags ' + args.gpu_args}; {platform.node()}, "
          f"{os.cpu_count()} CPUs; loopback; {args.samples} samples each\n")
    print("| mode | PUT → frame presented ms (p50 / p99) | PUT → drawn ms | PUT answered ms | page draw ms | n |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(row(r))


if __name__ == "__main__":
    main()
