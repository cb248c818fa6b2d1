// The `kyara web` static site: the student rendered in this browser, driven by sliders, presets and idle
// motion (blinks, breathing, sway; as kyara.drive.idle), with no server. Data comes from sibling classic
// scripts (file:// pages cannot fetch files): character.js (self.kyaraSite: name, parameters, presets),
// weights.js (self.kyaraWeights: base64 .kyw), student_wgsl.js (self.kyaraWGSL). ?idle=0 starts with idle
// motion off; ?render=webgl2|webgpu picks a backend, ?student=full|lite the student (default auto: renderer.js).
(async () => {
  'use strict';
  const R = self.kyaraRender, site = self.kyaraSite;
  const params = new URLSearchParams(location.search);
  const notice = document.getElementById('notice'), info = document.getElementById('info');
  const stage = document.getElementById('stage');
  const names = site.parameters.map(p => p.name);
  document.getElementById('title').textContent = site.name;
  document.body.dataset.state = 'loading';

  // -- controls -----------------------------------------------------------------------------------
  const manual = {};          // slider values the user set
  let preset = null, intensity = 1;
  const sliders = {};
  const paramsBox = document.getElementById('params');
  for (const p of site.parameters) {
    const row = document.createElement('label');
    row.className = 'row';
    const input = Object.assign(document.createElement('input'), { type: 'range', min: p.low, max: p.high, step: 0.01, value: 0 });
    input.dataset.name = p.name;
    const out = document.createElement('output');
    out.textContent = '0.00';
    input.addEventListener('input', () => { manual[p.name] = Number(input.value); out.textContent = Number(input.value).toFixed(2); });
    row.append(Object.assign(document.createElement('span'), { textContent: p.name }), input, out);
    paramsBox.append(row);
    sliders[p.name] = { input, out };
  }
  document.getElementById('reset').addEventListener('click', () => {
    for (const k of Object.keys(manual)) delete manual[k];
    preset = null;
    for (const { input, out } of Object.values(sliders)) { input.value = 0; out.textContent = '0.00'; }
  });
  const presetBox = document.getElementById('presets');
  for (const name of Object.keys(site.presets)) {
    const button = Object.assign(document.createElement('button'), { textContent: name });
    button.dataset.preset = name;
    button.addEventListener('click', () => { preset = name === 'neutral' ? null : name; });
    presetBox.append(button);
  }
  const idleOn = { blink: params.get('idle') !== '0', breathing: params.get('idle') !== '0', sway: params.get('idle') !== '0' };
  const idleBox = document.getElementById('idle');
  for (const part of Object.keys(idleOn)) {
    const label = document.createElement('label');
    const box = Object.assign(document.createElement('input'), { type: 'checkbox', checked: idleOn[part] });
    box.dataset.idle = part;
    box.addEventListener('change', () => { idleOn[part] = box.checked; });
    label.append(box, ` ${part} `);
    idleBox.append(label);
  }

  // -- idle motion (kyara.drive.idle: blink sin(pi u) over 0.15 s every 2-6 s, 20 breaths/min, slow sway) --
  const SWAY = [['head_x', 0.05], ['head_y', 0.08], ['neck_z', 0.06], ['body_y', 0.05], ['body_z', 0.04]];
  const SWAY_HZ = [0.07, 0.11, 0.17];
  const phases = SWAY.map(() => SWAY_HZ.map(() => Math.random() * 2 * Math.PI));
  let nextBlink = 2 + Math.random() * 4, blinkStart = -1, lastT = 0;
  function idle(t) {
    const out = {};
    if (idleOn.blink) {
      // latched: a blink whose middle passed since the last frame shows closed eyes (slow renderers)
      let v = 0;
      if (t >= nextBlink) { blinkStart = nextBlink; nextBlink = t + 2 + Math.random() * 4; }
      if (blinkStart >= 0) {
        const u = (t - blinkStart) / 0.15;
        if (u >= 0 && u <= 1) v = Math.sin(Math.PI * u);
        if (lastT < blinkStart + 0.075 && blinkStart + 0.075 <= t) v = 1;
      }
      out.eye_wink_left = out.eye_wink_right = v;
    }
    if (idleOn.breathing) out.breathing = (1 - Math.cos(2 * Math.PI * (20 / 60) * t)) / 2;
    if (idleOn.sway) SWAY.forEach(([name, amp], i) => {
      out[name] = amp * SWAY_HZ.reduce((s, f, j) => s + Math.sin(2 * Math.PI * f * t + phases[i][j]), 0) / SWAY_HZ.length;
    });
    lastT = t;
    return out;
  }

  // preset (scaled) < manual sliders; idle: blinks close further, breathing fills in, sway adds
  function currentPose(t) {
    const values = {};
    if (preset) for (const [k, v] of Object.entries(site.presets[preset])) values[k] = v * intensity;
    Object.assign(values, manual);
    for (const [k, v] of Object.entries(idle(t))) {
      if (k.startsWith('eye_wink')) values[k] = Math.max(values[k] || 0, v);
      else if (k === 'breathing') values[k] = k in manual ? values[k] : v;
      else values[k] = (values[k] || 0) + v;
    }
    return site.parameters.map(p => Math.min(p.high, Math.max(p.low, values[p.name] || 0)));
  }

  // -- renderer ------------------------------------------------------------------------------------
  let renderer;
  try {
    renderer = await R.start({ weights: R.base64ToBuffer(self.kyaraWeights), wgslSource: self.kyaraWGSL || null,
                               container: stage, prefer: params.get('render') || 'auto',
                               student: params.get('student') || 'auto', shapes: site.shapes });
  } catch (e) {
    notice.textContent = e instanceof R.NoBackendError
      ? `This browser cannot render the character: it needs WebGPU or WebGL2 with float render targets (${e.message}).`
      : `The character could not be loaded: ${e.message}`;
    document.body.dataset.state = 'error';
    return;
  }
  self.kyaraApp = { renderer, currentPose, manual, idleOn, names };
  document.body.dataset.state = 'running';
  document.body.dataset.backend = renderer.backend;
  document.body.dataset.student = renderer.student;
  const t0 = performance.now();
  let frames = 0, last = null;
  for (;;) {
    const t = (performance.now() - t0) / 1000;
    const pose = currentPose(t);
    // nothing moves (idle off, no input): draw nothing until something changes
    if (last && pose.every((v, i) => v === last[i])) { await new Promise(r => setTimeout(r, 50)); continue; }
    await renderer.draw(pose);
    last = pose;
    frames++;
    renderer.canvas.dataset.frames = String(frames);
    document.body.dataset.student = renderer.student;
    info.textContent = `${renderer.backend} (${renderer.adapterInfo}), ${renderer.student} student · ${(frames / ((performance.now() - t0) / 1000)).toFixed(2)} frames/s`;
    await new Promise(r => requestAnimationFrame(() => r()));
  }
})();
