// Shared by the studio and /obs pages: one WebSocket to /ws, newest-frame-only drawing on a canvas.
// Binary messages: 8-byte header (uint32 seq, uint32 inputs applied, big-endian) + WebP with alpha.
// Text messages (JSON): {"type": "status", fps, latency_ms, sources, ...} every 0.5 s;
// {"type": "state", manual, preset, idle} on connect and whenever the controls' state changes;
// {"type": "error", error} for each message of ours the server dropped.
"use strict";

const kyara = (() => {
  const params = new URLSearchParams(location.search);
  const token = params.get("token");

  function apiFetch(path, options = {}) {
    const headers = Object.assign({}, options.headers || {});
    if (token) headers["Authorization"] = "Bearer " + token;
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    return fetch(path, Object.assign({}, options, { headers }));
  }

  function wsUrl() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    return proto + "//" + location.host + "/ws" + (token ? "?token=" + encodeURIComponent(token) : "");
  }

  // Connects, draws frames on `canvas`, calls onStatus(status), onState("open"|"closed") and
  // onServerState(state) (the server's controls: sent on every (re)connect, so a restarted server
  // resets the page); reconnects with backoff. Returns {send(obj), stats}.
  function connect(canvas, onStatus, onState, onServerState) {
    const ctx = canvas.getContext("2d");
    const stats = { frames: 0, lastSeq: 0, lastInputs: 0, decodeBusy: false, drawn: 0, errors: 0, lastError: null };
    let pending = null; // newest undecoded frame; older ones are dropped
    let socket = null;
    let backoff = 250;

    async function drawLoop() {
      if (stats.decodeBusy || !pending) return;
      stats.decodeBusy = true;
      const { blob, seq, inputs } = pending;
      pending = null;
      try {
        const bitmap = await createImageBitmap(blob);
        if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
          canvas.width = bitmap.width;
          canvas.height = bitmap.height;
        }
        ctx.clearRect(0, 0, canvas.width, canvas.height);
        ctx.drawImage(bitmap, 0, 0);
        bitmap.close();
        stats.drawn += 1;
        canvas.dataset.seq = String(seq);
        canvas.dataset.inputs = String(inputs);
      } catch (e) {
        console.warn("frame decode failed", e);
      } finally {
        stats.decodeBusy = false;
        if (pending) drawLoop();
      }
    }

    function open() {
      socket = new WebSocket(wsUrl());
      socket.binaryType = "arraybuffer";
      socket.onopen = () => { backoff = 250; onState && onState("open"); };
      socket.onmessage = (ev) => {
        if (typeof ev.data === "string") {
          let msg;
          try { msg = JSON.parse(ev.data); } catch (e) { return; }
          if (msg.type === "status") onStatus && onStatus(msg);
          else if (msg.type === "state") onServerState && onServerState(msg);
          else if (msg.type === "error") {
            stats.errors += 1;
            stats.lastError = msg.error;
            console.warn("kyara server dropped a message:", msg.error);
          }
          return;
        }
        const view = new DataView(ev.data);
        if (ev.data.byteLength < 8) return;
        const seq = view.getUint32(0), inputs = view.getUint32(4);
        stats.frames += 1;
        stats.lastSeq = seq;
        stats.lastInputs = inputs;
        pending = { blob: new Blob([ev.data.slice(8)], { type: "image/webp" }), seq, inputs };
        drawLoop();
      };
      socket.onclose = () => {
        onState && onState("closed");
        setTimeout(open, backoff);
        backoff = Math.min(backoff * 2, 5000);
      };
    }
    open();

    function send(obj) {
      if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(obj));
    }
    return { send, stats };
  }

  return { token, apiFetch, connect };
})();
