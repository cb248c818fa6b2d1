"""Browser end-to-end fixtures: a real uvicorn server on a free port (fake character by default)
and headless Debian Chromium driven by Playwright. Skipped with a reason when either is missing."""
from __future__ import annotations

import os
import shutil
import threading
import time

import pytest

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def chromium_path() -> str | None:
    for candidate in (os.environ.get("KYARA_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Python package 'playwright' is not installed")
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium executable (apt-get install chromium, or set KYARA_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


class LiveServer:
    """uvicorn serving create_app(engine, config) in a background thread, with the session's uvicorn
    settings (kyara.server.uvicorn_config). config defaults to LiveConfig(port=0): a free port."""

    def __init__(self, engine, config=None, known_events=("wink", "surprised", "happy_nod")) -> None:
        import uvicorn

        from kyara.live.session import LiveConfig
        from kyara.server import create_app, uvicorn_config

        self.engine = engine
        self.config = config or LiveConfig(port=0)
        self.app = create_app(engine, self.config, known_events=list(known_events))
        self.server = uvicorn.Server(uvicorn_config(self.app, self.config))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def live_server():
    pytest.importorskip("uvicorn")
    from e2e.fakes import FakeCharacter, FakeMixer
    from kyara.live import LiveEngine

    engine = LiveEngine(FakeCharacter(), FakeMixer(), fps=60)
    with LiveServer(engine) as server:
        yield server
