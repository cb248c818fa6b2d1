// Picks a backend and a student for the browser renderer and draws frames: WebGPU on a real GPU, else
// WebGL2, else WebGPU's software adapter; throws NoBackendError when none works (the page then falls
// back to server-rendered frames and says so). Needs kyw.js, plan.js, student_webgl2.js, student_webgpu.js.
//
// Full or lite student (student: 'auto' | 'full' | 'lite'; pages take ?student=): the lite student
// (kyara.student.lite, same weights, ~1/10 of the work) needs the lite plan in the weights. 'auto'
// starts with the full student on a hardware WebGPU adapter and with the lite one elsewhere, then
// times the first AUTO_FRAMES draws against the display's frame interval (requestAnimationFrame) and
// switches once: full → lite when full's median draw is longer than the interval; lite → full when
// full's draw, predicted as lite's median × (full work / lite work), fits in the interval (a full
// student that then misses it goes back to lite for good).
(function (root) {
  'use strict';
  const ns = root.kyaraRender = root.kyaraRender || {};
  class NoBackendError extends Error {}
  ns.NoBackendError = NoBackendError;
  const AUTO_FRAMES = 8;

  async function webgpuAdapterKind() {
    if (!root.navigator || !navigator.gpu) return null;
    try {
      const adapter = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
      if (!adapter) return null;
      return adapter.info && adapter.info.isFallbackAdapter ? 'software' : 'hardware';
    } catch (e) { return null; }
  }

  // The display's frame interval in ms: median of a few requestAnimationFrame deltas (60 Hz when the
  // page gets none within half a second, e.g. a hidden tab).
  ns.displayInterval = function displayInterval() {
    return new Promise(resolve => {
      if (typeof requestAnimationFrame !== 'function') { resolve(1000 / 60); return; }
      const times = [];
      const timer = setTimeout(() => resolve(1000 / 60), 500);
      const tick = t => {
        times.push(t);
        if (times.length < 7) { requestAnimationFrame(tick); return; }
        clearTimeout(timer);
        const d = times.slice(1).map((x, i) => x - times[i]).sort((a, b) => a - b);
        resolve(Math.min(Math.max(d[d.length >> 1], 1000 / 240), 1000 / 15));
      };
      requestAnimationFrame(tick);
    });
  };

  // One backend on one plan: {backend, adapterInfo, canvas, draw(pose), render(pose), destroy()}.
  async function createBackend(backend, plan, wgslSource, gpuKind) {
    const canvas = document.createElement('canvas');
    canvas.width = canvas.height = plan.CANVAS;
    canvas.dataset.backend = backend;
    if (backend === 'webgl2') {
      const renderer = ns.createWebGL2(plan, canvas);
      renderer.canvas = canvas;
      return renderer;
    }
    if (!gpuKind) throw new Error(wgslSource ? 'WebGPU is not available' : 'no WGSL source');
    const renderer = await ns.createWebGPU(plan, wgslSource);
    const ctx = canvas.getContext('2d');
    const image = new ImageData(plan.CANVAS, plan.CANVAS);
    const render = renderer.render;
    renderer.render = async pose => {
      const rgba = await render(pose);
      image.data.set(rgba);
      ctx.putImageData(image, 0, 0);
      return rgba;
    };
    renderer.draw = async pose => { await renderer.render(pose); };
    renderer.canvas = canvas;
    return renderer;
  }

  const median = xs => { const s = xs.slice().sort((a, b) => a - b); return s[s.length >> 1]; };

  // weights: ArrayBuffer of a .kyw file; wgslSource: student.wgsl's text (null: no WebGPU);
  // container: element the canvas (512 x 512) is put in; prefer: 'auto' | 'webgpu' | 'webgl2';
  // student: 'auto' | 'full' | 'lite' (see the top of this file).
  // Resolves to {backend, student, adapterInfo, canvas, draw(pose) → Promise, render(pose) → Promise<RGBA>,
  // drawMs (median of the timed draws), switches: ["full->lite", ...]}.
  // Throws KywError for bad weights (or student 'lite' on weights without it) and NoBackendError
  // (message lists why each backend failed).
  // shapes: the expected tensor shapes (default: a student's with the body shape its weights declare,
  // kyaraRender.studentShapes(kyaraRender.bodyShapeOf(tensors))).
  ns.start = async function start({ weights, wgslSource, container, prefer = 'auto', shapes = null, student = 'auto' }) {
    if (!['auto', 'full', 'lite'].includes(student)) throw new Error(`student must be auto, full or lite, got ${student}`);
    const kyw = ns.parseKyw(weights, shapes || (tensors => ns.studentShapes(ns.bodyShapeOf(tensors))));
    const hasLite = ns.hasLite(kyw);
    if (student === 'lite' && !hasLite) throw new ns.KywError('these weights carry no lite student (re-export them)');
    const plans = {};
    const planOf = which => plans[which] || (plans[which] = ns.buildPlan(kyw, { lite: which === 'lite' }));
    planOf('full');   // validates the weights whatever is drawn first
    const gpuKind = wgslSource ? await webgpuAdapterKind() : null;
    let order;
    if (prefer === 'webgpu') order = ['webgpu', 'webgl2'];
    else if (prefer === 'webgl2') order = ['webgl2', 'webgpu'];
    else order = gpuKind === 'hardware' ? ['webgpu', 'webgl2'] : ['webgl2', 'webgpu'];
    const firstStudent = backend => student !== 'auto' ? student
      : (backend === 'webgpu' && gpuKind === 'hardware') || !hasLite ? 'full' : 'lite';
    const failures = [];
    let inner = null, backend = null, which = null;
    for (const candidate of order) {
      try {
        which = firstStudent(candidate);
        inner = await createBackend(candidate, planOf(which), wgslSource, gpuKind);
        backend = candidate;
        break;
      } catch (e) {
        failures.push(`${candidate}: ${e.message}`);
      }
    }
    if (!inner) throw new NoBackendError(failures.join('; '));
    container.replaceChildren(inner.canvas);

    const interval = student === 'auto' && hasLite ? await ns.displayInterval() : null;
    let times = [], settled = interval === null, triedFull = which === 'full';
    const self = {
      backend, student: which, adapterInfo: inner.adapterInfo, name: kyw.header.name || 'character',
      get canvas() { return inner.canvas; }, drawMs: null, displayMs: interval, switches: [],
      async draw(pose) {
        const t0 = performance.now();
        await inner.draw(pose);
        times.push(performance.now() - t0);
        self.drawMs = median(times);
        if (!settled && times.length >= AUTO_FRAMES) await decide(pose);
      },
      async render(pose) { return inner.render(pose); },
      finish() { if (inner.finish) inner.finish(); },
      destroy() { inner.destroy(); },
    };

    async function swap(to, pose) {
      const next = await createBackend(backend, planOf(to), wgslSource, gpuKind);
      inner.destroy();
      inner = next;
      self.switches.push(`${self.student}->${to}`);
      self.student = to;
      times = [];
      container.replaceChildren(inner.canvas);
      await inner.draw(pose);   // the new canvas shows the current pose at once
    }

    async function decide(pose) {
      const ms = median(times);
      if (self.student === 'full' && ms > interval) { settled = true; await swap('lite', pose); return; }
      if (self.student === 'lite' && !triedFull && ms * planOf('full').work / planOf('lite').work < interval) {
        triedFull = true;     // one try; settles after its own timed frames
        await swap('full', pose);
        return;
      }
      settled = true;
    }
    return self;
  };

  // Fetch a URL as an ArrayBuffer, refusing bodies over the .kyw size limit before reading them whole.
  ns.fetchWeights = async function fetchWeights(url, headers = {}) {
    const response = await fetch(url, { headers, cache: 'no-store' });
    if (!response.ok) {
      let detail = '';
      try { detail = (await response.json()).error || ''; } catch (e) { /* not JSON */ }
      throw new ns.KywError(`could not load the character weights (${response.status}${detail ? ': ' + detail : ''})`);
    }
    const length = Number(response.headers.get('Content-Length') || 0);
    if (length > ns.KYW_MAX_FILE_BYTES) {
      if (response.body) response.body.cancel().catch(() => {});   // stop downloading it
      throw new ns.KywError(`weights file is ${length} bytes, more than the ${ns.KYW_MAX_FILE_BYTES} allowed`);
    }
    return response.arrayBuffer();
  };
})(typeof self !== 'undefined' ? self : this);
