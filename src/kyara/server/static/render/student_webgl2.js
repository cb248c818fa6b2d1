// The student on WebGL2: the same plan as the WGSL compute passes (render/plan.js, render/student.wgsl),
// as fragment-shader passes into RGBA32F texture arrays (EXT_color_buffer_float). An activation with
// G channel groups at size S is a TEXTURE_2D_ARRAY S x S x G; a pass writes up to 8 groups at once
// through multiple render targets. Texel row 0 is the image's top row everywhere; only the final
// present pass flips for the canvas.
(function (root) {
  'use strict';
  const ns = root.kyaraRender = root.kyaraRender || {};

  const HEADER = `#version 300 es
precision highp float; precision highp int;
precision highp sampler2D; precision highp sampler2DArray;
`;

  const VERTEX = `#version 300 es
void main() {
  vec2 p = vec2(float((gl_VertexID << 1) & 2), float(gl_VertexID & 2));
  gl_Position = vec4(p * 2.0 - 1.0, 0.0, 1.0);
}`;

  // Shared by the layer shaders: N output groups per pass (a program per N, loops unrolled); the
  // pass's weights arrive in a uniform block (block k * gIn + ig is W's 4x4 block (og0 + k, ig)),
  // the per-frame first-layer blocks in another.
  const LAYER_COMMON = (n, maxBlocks, frameBlocks) => HEADER + `
#define N ${n}
layout(std140) uniform Layer { vec4 bias[8]; mat4 w[${maxBlocks}]; };
layout(std140) uniform Frame { mat4 f[${frameBlocks}]; };
uniform sampler2D u_mask;
uniform sampler2DArray u_src;
uniform int u_useMask, u_gIn, u_og0, u_pbOff, u_prevSize, u_size, u_act;
${Array.from({ length: n }, (_, k) => `layout(location = ${k}) out vec4 o${k};`).join('\n')}
void emit(vec4 acc[N]) {
${Array.from({ length: n }, (_, k) => `  o${k} = acc[${k}];`).join('\n')}
}
bool masked(ivec2 px) { return u_useMask == 1 && texelFetch(u_mask, px, 0).r < 0.5; }
`;

  const DENSE = (n, maxBlocks, frameBlocks) => LAYER_COMMON(n, maxBlocks, frameBlocks) + `
void main() {
  ivec2 px = ivec2(gl_FragCoord.xy);
  vec4 acc[N];
  if (masked(px)) discard;   // never read: keeps what the target held (the lite face's constant face)
  for (int k = 0; k < N; k++) acc[k] = bias[k];
  for (int ig = 0; ig < u_gIn; ig++) {
    vec4 x = texelFetch(u_src, ivec3(px, ig), 0);
    for (int k = 0; k < N; k++) acc[k] += w[k * u_gIn + ig] * x;
  }
  if (u_act == 1) for (int k = 0; k < N; k++) acc[k] = sin(acc[k]);
  emit(acc);
}`;

  const FIRST = (n, maxBlocks, frameBlocks) => LAYER_COMMON(n, maxBlocks, frameBlocks) + `
// bilinear taps from inSize to u_size, any ratio (student.wgsl's up_taps: one exact integer division)
vec3 upTaps(int i, int inSize) {
  float s = max(float((2 * i + 1) * inSize) / float(2 * u_size) - 0.5, 0.0);
  float lo = min(floor(s), float(inSize - 1));
  return vec3(lo, min(lo + 1.0, float(inSize - 1)), s - lo);
}
void main() {
  ivec2 px = ivec2(gl_FragCoord.xy);
  vec4 acc[N];
  if (masked(px)) discard;
  float sz = float(u_size);
  vec4 pos = vec4(float(2 * px.x + 1) / sz - 1.0, float(2 * px.y + 1) / sz - 1.0, 1.0, 0.0);
  vec3 tx = upTaps(px.x, max(u_prevSize, 1)), ty = upTaps(px.y, max(u_prevSize, 1));
  int x0 = int(tx.x), x1 = int(tx.y), y0 = int(ty.x), y1 = int(ty.y);
  for (int k = 0; k < N; k++) {
    int og = u_og0 + k;
    vec4 z = f[u_pbOff + og] * pos;
    if (u_prevSize > 0) {
      vec4 top = (1.0 - tx.z) * texelFetch(u_src, ivec3(x0, y0, og), 0) + tx.z * texelFetch(u_src, ivec3(x1, y0, og), 0);
      vec4 bottom = (1.0 - tx.z) * texelFetch(u_src, ivec3(x0, y1, og), 0) + tx.z * texelFetch(u_src, ivec3(x1, y1, og), 0);
      z += (1.0 - ty.z) * top + ty.z * bottom;
    }
    acc[k] = sin(z);
  }
  emit(acc);
}`;

  const COMPOSE = HEADER + `
uniform sampler2DArray u_src;     // body head outputs: layer 0 = flow x, flow y, alpha, colour r; layer 1 = colour g, b, a
uniform sampler2DArray u_face;    // face morpher RGBA (model space), face box size
uniform sampler2D u_image;        // character image, model space
uniform sampler2D u_mask;         // the region at the canvas size
uniform ivec3 u_faceBox;          // top, left, size
uniform int u_size;
uniform int u_headSize;           // side of the head outputs' grid: 0 = the canvas (full), else coarse (lite)
out vec4 outColor;
// Bilinear taps from a grid of inSize to the canvas along one axis (align_corners=False, any ratio).
vec3 headTaps(int i, int inSize) {
  float s = max(float((2 * i + 1) * inSize) / float(2 * u_size) - 0.5, 0.0);
  float lo = min(floor(s), float(inSize - 1));
  return vec3(lo, min(lo + 1.0, float(inSize - 1)), s - lo);
}
vec4 head(int layer, vec3 tx, vec3 ty) {
  ivec2 a = ivec2(tx.xy), b = ivec2(ty.xy);
  vec4 top = (1.0 - tx.z) * texelFetch(u_src, ivec3(a.x, b.x, layer), 0) + tx.z * texelFetch(u_src, ivec3(a.y, b.x, layer), 0);
  vec4 bottom = (1.0 - tx.z) * texelFetch(u_src, ivec3(a.x, b.y, layer), 0) + tx.z * texelFetch(u_src, ivec3(a.y, b.y, layer), 0);
  return (1.0 - ty.z) * top + ty.z * bottom;
}
vec4 edited(int col, int row) {
  if (row >= u_faceBox.x && row < u_faceBox.x + u_faceBox.z && col >= u_faceBox.y && col < u_faceBox.y + u_faceBox.z)
    return texelFetch(u_face, ivec3(col - u_faceBox.y, row - u_faceBox.x, 0), 0);
  return texelFetch(u_image, ivec2(col, row), 0);
}
vec3 srgb(vec3 x) {
  vec3 c = clamp(x, 0.0, 1.0);
  return mix(1.055 * pow(c, vec3(1.0 / 2.4)) - 0.055, c * 12.92, lessThanEqual(c, vec3(0.003130804953560372)));
}
void main() {
  ivec2 px = ivec2(gl_FragCoord.xy);
  vec4 h0 = vec4(0.0), h1 = vec4(0.0);
  if (texelFetch(u_mask, px, 0).r > 0.5) {
    if (u_headSize == 0) { h0 = texelFetch(u_src, ivec3(px, 0), 0); h1 = texelFetch(u_src, ivec3(px, 1), 0); }
    else {
      vec3 tx = headTaps(px.x, u_headSize), ty = headTaps(px.y, u_headSize);
      h0 = head(0, tx, ty); h1 = head(1, tx, ty);
    }
  }
  float sz = float(u_size);
  float gx = float(2 * px.x + 1) / sz - 1.0 + h0.x;
  float gy = float(2 * px.y + 1) / sz - 1.0 + h0.y;
  float ix = clamp(((gx + 1.0) * sz - 1.0) * 0.5, 0.0, sz - 1.0);
  float iy = clamp(((gy + 1.0) * sz - 1.0) * 0.5, 0.0, sz - 1.0);
  float fx = floor(ix), fy = floor(iy);
  int c0 = int(fx), r0 = int(fy), c1 = min(c0 + 1, u_size - 1), r1 = min(r0 + 1, u_size - 1);
  float nw = (fx + 1.0 - ix) * (fy + 1.0 - iy), ne = (ix - fx) * (fy + 1.0 - iy);
  float sw = (fx + 1.0 - ix) * (iy - fy), se = (ix - fx) * (iy - fy);
  vec4 warped = nw * edited(c0, r0) + ne * edited(c1, r0) + sw * edited(c0, r1) + se * edited(c1, r1);
  float a = h0.z;
  vec4 color = vec4(h0.w, h1.xyz);
  vec4 v = (1.0 - a) * warped + a * color;
  vec4 unit = (v + 1.0) * 0.5;
  outColor = roundEven(vec4(srgb(unit.xyz), clamp(unit.w, 0.0, 1.0)) * 255.0);
}`;

  const PRESENT = HEADER + `
uniform sampler2D u_out;
uniform int u_size;
out vec4 outColor;
void main() {
  ivec2 px = ivec2(gl_FragCoord.xy);
  outColor = texelFetch(u_out, ivec2(px.x, u_size - 1 - px.y), 0) / 255.0;
}`;

  function compile(gl, vs, fs) {
    const program = gl.createProgram();
    for (const [type, src] of [[gl.VERTEX_SHADER, vs], [gl.FRAGMENT_SHADER, fs]]) {
      const shader = gl.createShader(type);
      gl.shaderSource(shader, src);
      gl.compileShader(shader);
      if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS))
        throw new Error(`WebGL2 shader compile error: ${gl.getShaderInfoLog(shader)}`);
      gl.attachShader(program, shader);
    }
    gl.linkProgram(program);
    if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(`WebGL2 link error: ${gl.getProgramInfoLog(program)}`);
    const uniforms = {};
    const n = gl.getProgramParameter(program, gl.ACTIVE_UNIFORMS);
    for (let i = 0; i < n; i++) {
      const name = gl.getActiveUniform(program, i).name;
      uniforms[name] = gl.getUniformLocation(program, name);
    }
    return { program, uniforms };
  }

  // canvas: an HTMLCanvasElement (512 x 512) the frames are drawn on. Throws when WebGL2 or float
  // render targets are missing.
  // options.maxGroups caps the render targets per pass (default 8).
  ns.createWebGL2 = function createWebGL2(plan, canvas, options = {}) {
    const gl = canvas.getContext('webgl2', { premultipliedAlpha: false, alpha: true, antialias: false,
                                            preserveDrawingBuffer: true, depth: false, stencil: false });
    if (!gl) throw new Error('WebGL2 is not available in this browser');
    if (!gl.getExtension('EXT_color_buffer_float')) throw new Error('WebGL2 lacks EXT_color_buffer_float (float render targets)');
    // groups per pass: as many render targets as allowed and as fit one uniform block of weights
    const maxGIn = Math.max(...plan.passes.filter(p => p.kind === 'dense').map(p => p.gIn));
    const uboVec4 = gl.getParameter(gl.MAX_UNIFORM_BLOCK_SIZE) / 16;
    const M = Math.min(options.maxGroups || 8, gl.getParameter(gl.MAX_DRAW_BUFFERS), gl.getParameter(gl.MAX_COLOR_ATTACHMENTS),
                       Math.floor((uboVec4 - 8) / (4 * maxGIn)));
    if (M < 1) throw new Error('WebGL2 uniform blocks are too small for the student');
    if (plan.frameBlocks * 64 > uboVec4 * 16) throw new Error('WebGL2 uniform blocks are too small for the student');
    const maxBlocks = M * maxGIn, layerBytes = (8 + 4 * maxBlocks) * 16;
    const N = plan.CANVAS, fs = plan.faceBox.height;

    function dataTexture(data, internal, format, type, width, height) {
      const tex = gl.createTexture();
      gl.bindTexture(gl.TEXTURE_2D, tex);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
      gl.texStorage2D(gl.TEXTURE_2D, 1, internal, width, height);
      if (data) gl.texSubImage2D(gl.TEXTURE_2D, 0, 0, 0, width, height, format, type, data);
      return tex;
    }
    function arrayTexture(size, layers) {
      const tex = gl.createTexture();
      gl.bindTexture(gl.TEXTURE_2D_ARRAY, tex);
      gl.texParameteri(gl.TEXTURE_2D_ARRAY, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
      gl.texParameteri(gl.TEXTURE_2D_ARRAY, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
      gl.texStorage3D(gl.TEXTURE_2D_ARRAY, 1, gl.RGBA32F, size, size, layers);
      return tex;
    }

    const frameUbo = gl.createBuffer();
    gl.bindBuffer(gl.UNIFORM_BUFFER, frameUbo);
    gl.bufferData(gl.UNIFORM_BUFFER, plan.frameBlocks * 64, gl.DYNAMIC_DRAW);
    gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
    const masks = plan.masks.map(m => { const s = Math.round(Math.sqrt(m.length));
      return dataTexture(m.map(v => v * 255), gl.R8, gl.RED, gl.UNSIGNED_BYTE, s, s); });
    const image = dataTexture(plan.image, gl.RGBA32F, gl.RGBA, gl.FLOAT, N, N);
    const out = dataTexture(null, gl.RGBA32F, gl.RGBA, gl.FLOAT, N, N);

    // activation arrays per (name, size): as many layers as the widest pass reading or writing them
    const layersNeeded = {};
    const need = (name, size, g) => { const key = `${name}@${size}`; layersNeeded[key] = Math.max(layersNeeded[key] || 1, g); };
    for (const p of plan.passes) {
      if (p.kind === 'compose') { need(p.src, p.prevSize || p.size, 2); continue; }
      need(p.dst, p.size, p.gOut);
      if (p.kind === 'dense') need(p.src, p.size, p.gIn);
      else if (p.prevSize) need(p.src, p.prevSize, p.gOut);
    }
    const arrays = {};
    for (const [key, layers] of Object.entries(layersNeeded)) arrays[key] = arrayTexture(Number(key.split('@')[1]), layers);
    const arrayOf = (name, size) => arrays[`${name}@${size}`];
    if (plan.faceInit) {   // lite: the face passes write only the movable pixels; the rest stays this constant face
      gl.bindTexture(gl.TEXTURE_2D_ARRAY, arrayOf('FACE', fs));
      gl.texSubImage3D(gl.TEXTURE_2D_ARRAY, 0, 0, 0, 0, fs, fs, 1, gl.RGBA, gl.FLOAT, plan.faceInit);
    }

    const programs = { compose: compile(gl, VERTEX, COMPOSE), present: compile(gl, VERTEX, PRESENT) };
    function layerProgram(kind, n) {
      const key = `${kind}${n}`;
      if (!programs[key]) {
        const prog = compile(gl, VERTEX, (kind === 'dense' ? DENSE : FIRST)(n, maxBlocks, plan.frameBlocks));
        for (const [name, binding] of [['Layer', 0], ['Frame', 1]]) {
          const index = gl.getUniformBlockIndex(prog.program, name);
          if (index !== gl.INVALID_INDEX) gl.uniformBlockBinding(prog.program, index, binding);
        }
        programs[key] = prog;
      }
      return programs[key];
    }
    // a pass chunk's uniform block: biases of groups og0.. (8 vec4), then blocks (og0 + k, ig) at k * gIn + ig
    function layerUbo(p, og0, n) {
      const data = new Float32Array(layerBytes / 4);
      if (p.kind === 'dense') {
        data.set(plan.biases.subarray((p.bOff + og0) * 4, (p.bOff + og0 + n) * 4), 0);
        data.set(plan.weights.subarray((p.wOff + og0 * p.gIn) * 16, (p.wOff + (og0 + n) * p.gIn) * 16), 32);
      }
      const ubo = gl.createBuffer();
      gl.bindBuffer(gl.UNIFORM_BUFFER, ubo);
      gl.bufferData(gl.UNIFORM_BUFFER, data, gl.STATIC_DRAW);
      return ubo;
    }
    const vao = gl.createVertexArray();

    // one framebuffer per chunk of M output groups
    const steps = [];
    for (const p of plan.passes) {
      if (p.kind === 'compose') {
        const fb = gl.createFramebuffer();
        gl.bindFramebuffer(gl.FRAMEBUFFER, fb);
        gl.framebufferTexture2D(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0, gl.TEXTURE_2D, out, 0);
        steps.push({ p, fb, og0: 0, n: 1, prog: programs.compose });
        continue;
      }
      const dst = arrayOf(p.dst, p.size);
      for (let og0 = 0; og0 < p.gOut; og0 += M) {
        const n = Math.min(M, p.gOut - og0), fb = gl.createFramebuffer();
        gl.bindFramebuffer(gl.FRAMEBUFFER, fb);
        const buffers = [];
        for (let k = 0; k < n; k++) {
          gl.framebufferTextureLayer(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0 + k, dst, 0, og0 + k);
          buffers.push(gl.COLOR_ATTACHMENT0 + k);
        }
        gl.drawBuffers(buffers);
        const status = gl.checkFramebufferStatus(gl.FRAMEBUFFER);
        if (status !== gl.FRAMEBUFFER_COMPLETE) throw new Error(`WebGL2 float framebuffer incomplete (0x${status.toString(16)})`);
        steps.push({ p, fb, og0, n, prog: layerProgram(p.kind, n), ubo: layerUbo(p, og0, n),
                     pbOff: p.pb === null ? 0 : plan.firstOffsets[p.pb] });
      }
    }
    gl.bindFramebuffer(gl.FRAMEBUFFER, null);

    function bind(unit, target, tex, loc) {
      if (loc === undefined || loc === null) return;
      gl.activeTexture(gl.TEXTURE0 + unit);
      gl.bindTexture(target, tex);
      gl.uniform1i(loc, unit);
    }

    function run(pose) {
      gl.bindBuffer(gl.UNIFORM_BUFFER, frameUbo);
      gl.bufferSubData(gl.UNIFORM_BUFFER, 0, plan.frame(pose));
      gl.bindBufferBase(gl.UNIFORM_BUFFER, 1, frameUbo);
      gl.bindVertexArray(vao);
      gl.disable(gl.BLEND); gl.disable(gl.DEPTH_TEST);
      for (const { p, fb, og0, prog, ubo, pbOff } of steps) {
        gl.bindFramebuffer(gl.FRAMEBUFFER, fb);
        gl.viewport(0, 0, p.size, p.size);
        const u = prog.uniforms;
        gl.useProgram(prog.program);
        if (p.kind === 'compose') {
          bind(0, gl.TEXTURE_2D_ARRAY, arrayOf(p.src, p.prevSize || p.size), u.u_src);
          bind(1, gl.TEXTURE_2D_ARRAY, arrayOf('FACE', fs), u.u_face);
          bind(2, gl.TEXTURE_2D, image, u.u_image);
          bind(3, gl.TEXTURE_2D, masks[p.mask], u.u_mask);
          gl.uniform3i(u.u_faceBox, plan.faceBox.top, plan.faceBox.left, fs);
          gl.uniform1i(u.u_size, p.size);
          gl.uniform1i(u.u_headSize, p.prevSize);
        } else {
          // a first layer reads the level below (none at the coarsest level and for the face)
          const src = p.kind === 'dense' ? arrayOf(p.src, p.size) : p.prevSize ? arrayOf(p.src, p.prevSize) : dummyArray();
          gl.bindBufferBase(gl.UNIFORM_BUFFER, 0, ubo);
          bind(3, gl.TEXTURE_2D, p.mask === null ? masks[0] : masks[p.mask], u.u_mask);
          bind(4, gl.TEXTURE_2D_ARRAY, src, u.u_src);
          gl.uniform1i(u.u_useMask, p.mask === null ? 0 : 1);
          gl.uniform1i(u.u_gIn, p.gIn);
          gl.uniform1i(u.u_og0, og0);
          gl.uniform1i(u.u_act, p.act);
          gl.uniform1i(u.u_pbOff, pbOff);
          gl.uniform1i(u.u_prevSize, p.prevSize);
          gl.uniform1i(u.u_size, p.size);
        }
        gl.drawArrays(gl.TRIANGLES, 0, 3);
      }
    }

    let dummy = null;
    function dummyArray() { if (!dummy) dummy = arrayTexture(1, 1); return dummy; }

    function present() {
      gl.bindFramebuffer(gl.FRAMEBUFFER, null);
      gl.viewport(0, 0, N, N);
      const prog = programs.present;
      gl.useProgram(prog.program);
      bind(0, gl.TEXTURE_2D, out, prog.uniforms.u_out);
      gl.uniform1i(prog.uniforms.u_size, N);
      gl.drawArrays(gl.TRIANGLES, 0, 3);
    }

    const readFb = steps[steps.length - 1].fb;
    const floats = new Float32Array(N * N * 4), rgba = new Uint8ClampedArray(N * N * 4);
    const info = gl.getExtension('WEBGL_debug_renderer_info');
    return {
      backend: 'webgl2',
      adapterInfo: info ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER),
      drawBuffers: M,
      // Draw pose (45 numbers) on the canvas; resolves when the GPU has finished (polled with a fence,
      // so the page stays responsive even when a software GPU takes seconds per frame).
      async draw(pose) {
        run(pose); present();
        const sync = gl.fenceSync(gl.SYNC_GPU_COMMANDS_COMPLETE, 0);
        gl.flush();
        try {
          while (gl.clientWaitSync(sync, 0, 0) === gl.TIMEOUT_EXPIRED) await new Promise(r => setTimeout(r, 4));
        } finally { gl.deleteSync(sync); }
      },
      // pose → Uint8ClampedArray (512*512*4) sRGB straight RGBA, row 0 at the top (also drawn).
      async render(pose) {
        run(pose); present();
        gl.bindFramebuffer(gl.FRAMEBUFFER, readFb);
        gl.readPixels(0, 0, N, N, gl.RGBA, gl.FLOAT, floats);
        gl.bindFramebuffer(gl.FRAMEBUFFER, null);
        for (let i = 0; i < floats.length; i++) rgba[i] = floats[i];
        return rgba;
      },
      finish() { gl.finish(); },
      destroy() { const ext = gl.getExtension('WEBGL_lose_context'); if (ext) ext.loseContext(); },
    };
  };
})(typeof self !== 'undefined' ? self : this);
