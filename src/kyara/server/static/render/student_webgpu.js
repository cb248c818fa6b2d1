// The student on WebGPU: runs render/student.wgsl's compute passes over a plan (render/plan.js),
// the same dispatches as kyara/web/wgsl.py. Output: 8-bit sRGB straight RGBA, read back and drawn
// on a 2D canvas (a readback keeps presentation independent of WebGPU canvas support).
(function (root) {
  'use strict';
  const ns = root.kyaraRender = root.kyaraRender || {};
  const WORKGROUP = 64, NO_MASK = 0xffffffff;

  // plan: ns.buildPlan(...); wgslSource: text of student.wgsl. Resolves to a renderer or throws.
  ns.createWebGPU = async function createWebGPU(plan, wgslSource) {
    if (!root.navigator || !navigator.gpu) throw new Error('WebGPU is not available in this browser');
    const adapter = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) throw new Error('WebGPU has no adapter');
    const actBytes = Math.max(...plan.passes.map(p => 16 * Math.max(p.gIn, p.gOut) * p.size * p.size));
    if (actBytes > adapter.limits.maxStorageBufferBindingSize) throw new Error('WebGPU storage buffers are too small');
    const device = await adapter.requestDevice({ requiredLimits: {
      maxStorageBufferBindingSize: Math.max(actBytes, 128 << 20),
      maxBufferSize: Math.max(actBytes, 256 << 20),
      maxStorageBuffersPerShaderStage: 8 } });
    let lost = null;
    device.lost.then(info => { lost = info.message || 'device lost'; });
    const U = GPUBufferUsage;
    const buffer = (size, extra = 0) => device.createBuffer({ size: Math.max(16, size), usage: U.STORAGE | U.COPY_DST | extra });
    const upload = (data) => { const b = buffer(data.byteLength); device.queue.writeBuffer(b, 0, data); return b; };
    const fs = plan.faceBox.height, npixOut = plan.CANVAS * plan.CANVAS;
    const bufs = { A: buffer(actBytes), B: buffer(actBytes), OUT: buffer(16 * npixOut, U.COPY_SRC),
                   // lite: the face passes write only the movable pixels; the rest stays the constant face
                   FACE: plan.faceInit ? upload(plan.faceInit) : buffer(16 * fs * fs) };
    const weights = upload(plan.weights), biases = upload(plan.biases);
    const maskWords = new Uint32Array(plan.masks.reduce((n, m) => n + m.length, 0));
    plan.masks.forEach((m, l) => maskWords.set(m, plan.maskOffsets[l]));
    const masks = upload(maskWords), image = upload(plan.image), dummy = buffer(16);
    const frameBuf = buffer(plan.frameBlocks * 64);
    const readback = device.createBuffer({ size: 16 * npixOut, usage: U.MAP_READ | U.COPY_DST });

    device.pushErrorScope('validation');
    const module = device.createShaderModule({ code: wgslSource });
    const storage = (binding, ro = true) => ({ binding, visibility: GPUShaderStage.COMPUTE,
                                                buffer: { type: ro ? 'read-only-storage' : 'storage' } });
    const layout = device.createBindGroupLayout({ entries: [
      { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform' } },
      storage(1), storage(2), storage(3), storage(4, false), storage(5), storage(6), storage(7), storage(8)] });
    const pipelineLayout = device.createPipelineLayout({ bindGroupLayouts: [layout] });
    const pipelines = {};
    for (const kind of ['first', 'dense', 'compose'])
      pipelines[kind] = await device.createComputePipelineAsync({ layout: pipelineLayout, compute: { module, entryPoint: kind } });
    const steps = plan.passes.map(p => {
      const npix = p.size * p.size;
      const params = new Uint32Array(16);
      params.set([npix, p.size, p.gIn, p.gOut, p.wOff, p.bOff, p.act, p.mask === null ? NO_MASK : plan.maskOffsets[p.mask],
                  p.pb === null ? 0 : plan.firstOffsets[p.pb], p.prevSize, plan.faceBox.top, plan.faceBox.left, fs]);
      const uniform = device.createBuffer({ size: 64, usage: U.UNIFORM | U.COPY_DST });
      device.queue.writeBuffer(uniform, 0, params);
      const entries = [uniform, weights, biases, bufs[p.src], bufs[p.dst], masks, frameBuf,
                       p.dst === 'FACE' ? dummy : bufs.FACE, image];
      const group = device.createBindGroup({ layout, entries: entries.map((b, i) => ({ binding: i, resource: { buffer: b } })) });
      const gy = p.kind === 'compose' ? 1 : Math.ceil(p.gOut / plan.K);
      return [pipelines[p.kind], group, Math.ceil(npix / WORKGROUP), gy];
    });
    const error = await device.popErrorScope();
    if (error) throw new Error(`WebGPU shader/pipeline error: ${error.message}`);

    const rgba = new Uint8ClampedArray(npixOut * 4);
    return {
      backend: 'webgpu',
      adapterInfo: adapter.info ? `${adapter.info.vendor} ${adapter.info.architecture} ${adapter.info.description}`.trim() : '',
      // pose: 45 numbers → Uint8ClampedArray (512*512*4) sRGB straight RGBA, row 0 at the top.
      async render(pose) {
        if (lost) throw new Error(`WebGPU device lost: ${lost}`);
        device.queue.writeBuffer(frameBuf, 0, plan.frame(pose));
        const encoder = device.createCommandEncoder();
        const pass = encoder.beginComputePass();
        for (const [pipeline, group, gx, gy] of steps) {
          pass.setPipeline(pipeline); pass.setBindGroup(0, group); pass.dispatchWorkgroups(gx, gy);
        }
        pass.end();
        encoder.copyBufferToBuffer(bufs.OUT, 0, readback, 0, 16 * npixOut);
        device.queue.submit([encoder.finish()]);
        try {
          await readback.mapAsync(GPUMapMode.READ);
        } catch (e) {
          // the device can go while this frame is in flight, before device.lost has fired: name the cause
          // (the device), not the symptom (a failed map), if it is lost within a moment. The moment is generous:
          // device.lost comes from the GPU process, which can be busy for a while (200 ms was too short once on a
          // loaded CI machine with a software GPU), and a failed map on a live device is rare
          const info = await Promise.race([device.lost, new Promise(r => setTimeout(() => r(null), 3000))]);
          if (info) { lost = info.message || 'device lost'; throw new Error(`WebGPU device lost: ${lost}`); }
          throw e;
        }
        const values = new Float32Array(readback.getMappedRange());
        for (let i = 0; i < values.length; i++) rgba[i] = values[i];
        readback.unmap();
        return rgba;
      },
      destroy() { device.destroy(); },
    };
  };
})(typeof self !== 'undefined' ? self : this);
