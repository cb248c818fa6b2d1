"""Issue 12.8 in a real browser: other web pages must not drive or read the studio.

A page from another origin (http://localhost:OTHER) tries what the issue reported: open the
WebSocket, send a preset and mouth values, and post a ``text/plain`` no-cors event. A DNS-rebinding
page (Chromium resolves attacker.example to 127.0.0.1) loads the studio under its own name.
tests/test_server.py sends the same requests without a browser.
"""
from __future__ import annotations

import http.server
import threading

import pytest

from e2e.conftest import CHROMIUM_ARGS, chromium_path

pytestmark = pytest.mark.e2e

ATTACK_JS = """async (studio) => {
  const result = {wsOpened: false, wsClosed: null, posts: []};
  await new Promise((done) => {
    const ws = new WebSocket(studio.replace('http', 'ws') + '/ws');
    ws.onopen = () => {
      result.wsOpened = true;
      ws.send(JSON.stringify({type: 'preset', name: 'happy', intensity: 1}));
      ws.send(JSON.stringify({type: 'pose', values: {mouth_aaa: 1}}));
      setTimeout(() => ws.close(), 300);
    };
    ws.onclose = (ev) => { result.wsClosed = ev.code; done(); };
    setTimeout(done, 5000);
  });
  for (const [path, body] of [['/api/event', '{"name": "wink"}'], ['/api/preset', '{"name": "angry"}']]) {
    try {
      await fetch(studio + path, {method: 'POST', mode: 'no-cors', body});  // text/plain, no preflight
      result.posts.push('sent');
    } catch (e) { result.posts.push('failed: ' + e); }
  }
  return result;
}"""


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        body = b"<!doctype html><title>another site</title><p>nothing to see"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_another_page_cannot_use_the_websocket_or_post(browser, live_server):
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        page = browser.new_page()
        page.goto(f"http://localhost:{other.server_address[1]}/")
        result = page.evaluate(ATTACK_JS, live_server.url)
        page.close()
    finally:
        other.shutdown()
    assert result["wsOpened"] is False, result
    assert result["posts"] == ["sent", "sent"]  # the browser sends them (opaque answers); the server refuses
    mixer = live_server.engine.mixer
    assert mixer.events == [] and mixer.preset is None and live_server.engine.manual == {}
    status = live_server.engine.status()
    assert status["inputs"] == 0
    assert live_server.app.state.stats.blocked >= 3  # the handshake and both posts


def test_dns_rebinding_page_is_refused(browser, live_server):
    port = live_server.url.rsplit(":", 1)[1]
    # a second Chromium of the same Playwright, in which attacker.example resolves to this machine,
    # as after a DNS rebinding
    b = browser.browser_type.launch(executable_path=chromium_path(), headless=True,
                                    args=[*CHROMIUM_ARGS, "--host-resolver-rules=MAP attacker.example 127.0.0.1"])
    try:
        page = b.new_page()
        response = page.goto(f"http://attacker.example:{port}/")
        assert response.status == 421
        status = page.evaluate("() => fetch('/api/status').then(r => r.status)")
        assert status == 421
        put = page.evaluate("""() => fetch('/api/pose', {method: 'PUT', headers: {'Content-Type': 'application/json'},
                               body: JSON.stringify({mouth_aaa: 1})}).then(r => r.status)""")
        assert put == 421
    finally:
        b.close()
    assert live_server.engine.manual == {}
