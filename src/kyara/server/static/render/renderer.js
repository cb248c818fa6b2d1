// Picks a backend for the browser student and draws frames: WebGPU on a real GPU, else WebGL2, else
// WebGPU's software adapter; throws NoBackendError when none works (the page then falls back to
// server-rendered frames and says so). Needs kyw.js, plan.js, student_webgl2.js, student_webgpu.js.
(function (root) {
  'use strict';
  const ns = root.kyaraRender = root.kyaraRender || {};
  class NoBackendError extends Error {}
  ns.NoBackendError = NoBackendError;

  async function webgpuAdapterKind() {
    if (!root.navigator || !navigator.gpu) return null;
    try {
      const adapter = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
      if (!adapter) return null;
      return adapter.info && adapter.info.isFallbackAdapter ? 'software' : 'hardware';
    } catch (e) { return null; }
  }

  // weights: ArrayBuffer of a .kyw file; wgslSource: student.wgsl's text (null: no WebGPU);
  // container: element the canvas (512 x 512) is put in; prefer: 'auto' | 'webgpu' | 'webgl2'.
  // Resolves to {backend, adapterInfo, canvas, draw(pose) → Promise, render(pose) → Promise<RGBA>}.
  // Throws KywError for bad weights and NoBackendError (message lists why each backend failed).
  // shapes: the expected tensor shapes (default: the shipped student's, kyaraRender.studentShapes()).
  ns.start = async function start({ weights, wgslSource, container, prefer = 'auto', shapes = null }) {
    const plan = ns.buildPlan(ns.parseKyw(weights, shapes || ns.studentShapes()));
    const gpuKind = wgslSource ? await webgpuAdapterKind() : null;
    let order;
    if (prefer === 'webgpu') order = ['webgpu', 'webgl2'];
    else if (prefer === 'webgl2') order = ['webgl2', 'webgpu'];
    else order = gpuKind === 'hardware' ? ['webgpu', 'webgl2'] : ['webgl2', 'webgpu'];
    const failures = [];
    for (const backend of order) {
      const canvas = document.createElement('canvas');
      canvas.width = canvas.height = plan.CANVAS;
      canvas.dataset.backend = backend;
      try {
        let renderer;
        if (backend === 'webgl2') {
          renderer = ns.createWebGL2(plan, canvas);
          renderer.canvas = canvas;
        } else {
          if (!gpuKind) throw new Error(wgslSource ? 'WebGPU is not available' : 'no WGSL source');
          renderer = await ns.createWebGPU(plan, wgslSource);
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
        }
        container.replaceChildren(canvas);
        renderer.name = plan.name;
        return renderer;
      } catch (e) {
        failures.push(`${backend}: ${e.message}`);
      }
    }
    throw new NoBackendError(failures.join('; '));
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
    if (length > ns.KYW_MAX_FILE_BYTES)
      throw new ns.KywError(`weights file is ${length} bytes, more than the ${ns.KYW_MAX_FILE_BYTES} allowed`);
    return response.arrayBuffer();
  };
})(typeof self !== 'undefined' ? self : this);
