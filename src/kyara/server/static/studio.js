// Studio page: parameter sliders, presets, events, idle toggles, background, live stats.
"use strict";

(async () => {
  const $ = (id) => document.getElementById(id);
  const canvas = $("frame");
  const withToken = (path) => path + (kyara.token ? "?token=" + encodeURIComponent(kyara.token) : "");
  $("obs-link").href = withToken("/obs");
  $("obs-url").textContent = location.origin + withToken("/obs");

  const meta = await (await kyara.apiFetch("/api/parameters")).json();
  // The controls show the server's state, not the mixed pose: sliders the manual layer only (never
  // preset, tracker or idle values), the preset by name. The WebSocket sends it again on every
  // (re)connect, so a restarted server never leaves stale sliders here.
  const initial = await (await kyara.apiFetch("/api/state")).json();

  // -- live connection and stats ---------------------------------------------------------------
  const fmt = (v, digits = 1) => (v === null || v === undefined) ? "–" : Number(v).toFixed(digits);
  // kyara.live: pose packets drawn here (browser rendering, the default), or server frames (--render
  // server, or this page cannot render: then a notice says why)
  const conn = kyara.live(canvas, {
    onStatus,
    onState: (state) => {
      $("conn").textContent = state === "open" ? "live" : "reconnecting…";
      $("conn").className = "pill " + (state === "open" ? "on" : "off");
    },
    onServerState: (state) => applyState(state),
    notice: $("render-notice"),
  });
  let drawnBefore = null;   // {drawn, t}: this page's draws at the previous status (browser rendering)
  function onStatus(s) {
    $("character-name").textContent = s.character || "";
    const drawing = conn.render && conn.render.backend && document.body.dataset.render === "browser";
    if (drawing) {   // the rate this page draws at (the server's is its pose publication rate)
      const now = performance.now(), drawn = conn.render.drawn;
      if (drawnBefore) $("fps").textContent = fmt((drawn - drawnBefore.drawn) * 1000 / (now - drawnBefore.t));
      drawnBefore = { drawn, t: now };
    } else {
      $("fps").textContent = fmt(s.fps);
    }
    const lat = s.latency_ms || {};
    $("latency").textContent = lat.median == null ? "–" : fmt(lat.median, 0) + " / " + fmt(lat.p99, 0);
    const local = conn.render && conn.render.backend && document.body.dataset.render === "browser";
    $("render").textContent = local ? fmt(conn.render.drawMs) : fmt((s.render_ms || {}).median);
    $("render-where").textContent = local ? "render ms (this page, " + conn.render.backend + ", " + conn.render.student + " student)"
                                          : "render ms";
    $("clients").textContent = s.server ? s.server.ws_clients : "–";
    const box = $("sources");
    box.textContent = "";
    const sources = s.sources || [];
    if (!sources.length) box.innerHTML = '<span class="muted">no tracker sources</span>';
    for (const src of sources) {
      const chip = document.createElement("span");
      chip.className = "chip" + (src.live ? " live" : "");
      chip.textContent = src.name + (src.live ? " ● live" : " ○ silent");
      chip.title = JSON.stringify(src.stats);
      box.appendChild(chip);
    }
    if (s.idle) syncIdle(s.idle);
  }

  // -- parameter sliders, sent at most once per animation frame --------------------------------
  let dirty = {};
  let scheduled = false;
  function queue(name, value) {
    dirty[name] = value;
    if (!scheduled) {
      scheduled = true;
      requestAnimationFrame(() => { scheduled = false; conn.send({ type: "pose", values: dirty }); dirty = {}; });
    }
  }
  const sliders = {};
  const byCategory = {};
  for (const p of meta.parameters) (byCategory[p.category] = byCategory[p.category] || []).push(p);
  for (const category of meta.categories) {
    const det = document.createElement("details");
    det.open = ["MOUTH", "FACE_ROTATION", "EYE"].includes(category);
    det.innerHTML = `<summary>${category.replace("_", " ")} (${byCategory[category].length})</summary>`;
    for (const p of byCategory[category]) {
      const row = document.createElement("label");
      row.className = "slider-row";
      const step = (p.high - p.low) / 200;
      row.innerHTML = `<span title="${p.name}">${p.name}</span>
        <input type="range" min="${p.low}" max="${p.high}" step="${step}" value="0" data-name="${p.name}">
        <output>0.00</output>`;
      const input = row.querySelector("input"), out = row.querySelector("output");
      input.addEventListener("input", () => {
        out.textContent = fmt(input.value, 2);
        row.classList.add("set");
        queue(p.name, Number(input.value));
      });
      input.addEventListener("dblclick", () => { input.value = 0; input.dispatchEvent(new Event("input")); });
      sliders[p.name] = { input, out, row };
      det.appendChild(row);
    }
    $("params").appendChild(det);
  }
  // A slider the user is dragging, or whose value is still queued, keeps its value.
  function setSlider(name, value) {
    const s = sliders[name];
    if (!s || document.activeElement === s.input || name in dirty) return;
    s.input.value = value ?? 0;
    s.out.textContent = fmt(value ?? 0, 2);
    s.row.classList.toggle("set", value !== undefined);
  }
  $("reset").onclick = () => {
    conn.send({ type: "reset" });
    for (const { input, out, row } of Object.values(sliders)) { input.value = 0; out.textContent = "0.00"; row.classList.remove("set"); }
  };
  $("calibrate").onclick = () => kyara.apiFetch("/api/calibrate", { method: "POST", body: "{}" });

  // -- presets and events ---------------------------------------------------------------------
  const intensity = $("preset-intensity");
  intensity.oninput = () => { $("preset-intensity-out").textContent = fmt(intensity.value, 2); if (activePreset) sendPreset(activePreset); };
  let activePreset = null;
  function sendPreset(name) { conn.send({ type: "preset", name, intensity: Number(intensity.value) }); }
  function showPreset(preset) {
    activePreset = preset && preset.name !== "neutral" ? preset.name : null;
    for (const b of $("presets").children) b.classList.toggle("active", b.dataset.preset === activePreset);
    if (preset && document.activeElement !== intensity) {
      intensity.value = preset.intensity;
      $("preset-intensity-out").textContent = fmt(preset.intensity, 2);
    }
  }
  for (const [name, description] of Object.entries(meta.presets)) {
    const b = document.createElement("button");
    b.textContent = name;
    b.title = description;
    b.dataset.preset = name;
    b.onclick = () => {
      activePreset = name;
      for (const other of $("presets").children) other.classList.toggle("active", other === b);
      sendPreset(name);
    };
    $("presets").appendChild(b);
  }
  if (meta.events.length) $("events").textContent = "";
  for (const name of meta.events) {
    const b = document.createElement("button");
    b.textContent = name.replaceAll("_", " ");
    b.dataset.event = name;
    b.onclick = () => conn.send({ type: "event", name });
    $("events").appendChild(b);
  }

  // -- idle toggles ---------------------------------------------------------------------------
  const idleBoxes = {};
  for (const part of meta.idle_parts) {
    const label = document.createElement("label");
    label.innerHTML = `<input type="checkbox" data-idle="${part}" checked> ${part}`;
    const box = label.querySelector("input");
    box.onchange = () => conn.send({ type: "idle", [part]: box.checked });
    idleBoxes[part] = box;
    $("idle").appendChild(label);
  }
  function syncIdle(state) {
    for (const [part, on] of Object.entries(state)) if (idleBoxes[part] && document.activeElement !== idleBoxes[part]) idleBoxes[part].checked = !!on;
  }

  // -- background (this page only) ------------------------------------------------------------
  function applyBackground() {
    const mode = document.querySelector("input[name=bg]:checked").value;
    $("stage").classList.toggle("checker", mode === "transparent");
    $("stage").style.backgroundColor = mode === "color" ? $("bg-color").value : "";
  }
  for (const r of document.querySelectorAll("input[name=bg]")) r.onchange = applyBackground;
  $("bg-color").oninput = () => { document.querySelector("input[name=bg][value=color]").checked = true; applyBackground(); };

  // -- the server's state: on load, on every (re)connect and whenever any client changes it ------
  function applyState(state) {
    const manual = state.manual || {};
    for (const name of Object.keys(sliders)) setSlider(name, manual[name]);
    showPreset(state.preset);
    if (state.idle) syncIdle(state.idle);
    document.body.dataset.stateVersion = String(Number(document.body.dataset.stateVersion || 0) + 1);
  }
  applyState(initial);

  window.kyaraStudio = { conn, sliders, applyState, ready: true };
  document.body.dataset.ready = "1";
})();
