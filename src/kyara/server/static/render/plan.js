// The student forward as a list of shader passes plus packed weights (JS mirror of kyara/web/plan.py;
// both WebGL2 and WebGPU hosts run this plan). See student.wgsl's header for the data layout:
// channel groups of 4, 4x4 weight blocks (float j*4 + r of block (og, ig) = 30 W[4og + r, 4ig + j]
// for sine layers), output groups padded to a multiple of K = 4.
(function (root) {
  'use strict';
  const ns = root.kyaraRender = root.kyaraRender || {};
  const OMEGA_0 = 30, K = 4, CANVAS = 512, FACE_LAYERS = 8, NUM_POSE = 45, FACE_POSE = 39;
  const BODY_LEVELS = [[128, 3, 360, 180], [256, 3, 180, 90], [512, 3, 90, 90]];   // (size, layers, width, out)

  const groups = c => (c + 3) >> 2;
  const paddedGroups = c => Math.ceil(groups(c) / K) * K;

  // Expected tensor shapes of a student (.kyara names), checked by parseKyw.
  ns.studentShapes = function () {
    const s = {}, fp = 'face_morpher.siren.';
    for (let j = 0; j < FACE_LAYERS; j++) {
      s[`${fp}sine_layers.${j}.linear.weight`] = [128, j ? 128 : 2 + FACE_POSE];
      s[`${fp}sine_layers.${j}.linear.bias`] = [128];
    }
    s[`${fp}last_linear.weight`] = [4, 128]; s[`${fp}last_linear.bias`] = [4];
    let prev = 0;
    BODY_LEVELS.forEach(([, layers, width, out], l) => {
      for (let j = 0; j < layers; j++) {
        const cOut = j === layers - 1 ? out : width;
        s[`body_morpher.siren_layers.${l}.${j}.linear.weight`] = [cOut, j ? width : prev + 2 + NUM_POSE];
        s[`body_morpher.siren_layers.${l}.${j}.linear.bias`] = [cOut];
      }
      prev = out;
    });
    s['body_morpher.last_linear.weight'] = [7, prev]; s['body_morpher.last_linear.bias'] = [7];
    s.character_image = [CANVAS, CANVAS, 4];
    return s;
  };

  // w: Float32Array (cOut, cIn) row-major, starting at column c0 of a wider matrix of cStride columns.
  function packBlocks(w, cOut, cIn, c0, cStride, scale) {
    const gOut = paddedGroups(cOut), gIn = groups(cIn), out = new Float32Array(gOut * gIn * 16);
    for (let o = 0; o < cOut; o++) for (let i = 0; i < cIn; i++) {
      const og = o >> 2, r = o & 3, ig = i >> 2, j = i & 3;
      out[(og * gIn + ig) * 16 + j * 4 + r] = Math.fround(w[o * cStride + c0 + i] * scale);
    }
    return out;
  }

  function packBias(b, cOut, scale) {
    const out = new Float32Array(paddedGroups(cOut) * 4);
    if (b) for (let o = 0; o < cOut; o++) out[o] = Math.fround(b[o] * scale);
    return out;
  }

  // (512, 512) region (Uint8Array 0/1, or null) → masks at 128, 256, 512 (Uint8Array 0/1): the pixels
  // each body level evaluates (kyara.student.pixels.PixelSet.from_mask: bilinear taps of the finer level).
  function levelMasks(region) {
    if (!region) return BODY_LEVELS.map(([s]) => new Uint8Array(s * s).fill(1));
    const masks = [region];
    for (let l = 1; l < BODY_LEVELS.length; l++) {
      const fine = masks[0], s = Math.round(Math.sqrt(fine.length)), h = s >> 1, coarse = new Uint8Array(h * h);
      const lo = new Int32Array(s), hi = new Int32Array(s);
      for (let i = 0; i < s; i++) {
        const src = Math.max((i + 0.5) * 0.5 - 0.5, 0);
        lo[i] = Math.floor(src); hi[i] = Math.min(lo[i] + 1, h - 1);
      }
      for (let r = 0; r < s; r++) for (let c = 0; c < s; c++) if (fine[r * s + c]) {
        coarse[lo[r] * h + lo[c]] = 1; coarse[lo[r] * h + hi[c]] = 1;
        coarse[hi[r] * h + lo[c]] = 1; coarse[hi[r] * h + hi[c]] = 1;
      }
      masks.unshift(coarse);
    }
    return masks;
  }

  function srgbToLinear(x) {
    return x <= 0.04045 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4);
  }

  // uint8 sRGB straight RGBA (512*512*4) → Float32Array model space, as kyara.image.rgba_u8_to_tensor.
  function modelSpaceImage(rgba) {
    const out = new Float32Array(rgba.length);
    for (let p = 0; p < rgba.length; p += 4) {
      if (rgba[p + 3] === 0) { out.fill(-1, p, p + 4); continue; }
      for (let c = 0; c < 3; c++) out[p + c] = srgbToLinear(rgba[p + c] / 255) * 2 - 1;
      out[p + 3] = (rgba[p + 3] / 255) * 2 - 1;
    }
    return out;
  }

  function concat(arrays) {
    const out = new Float32Array(arrays.reduce((n, a) => n + a.length, 0));
    let o = 0;
    for (const a of arrays) { out.set(a, o); o += a.length; }
    return out;
  }

  // kyw = parseKyw(...) → plan {passes, weights, biases, frameBlocks, masks, maskOffsets, image, faceBox, frame(pose)}.
  ns.buildPlan = function buildPlan(kyw) {
    const t = name => kyw.tensors[name].data;
    const shape = name => kyw.tensors[name].shape;
    const faceBox = kyw.header.face_box;
    const blocks = [], biases = [], passes = [], firsts = [];
    let nBlocks = 0, nBias = 0, nFrame = 0;

    function addDense(wName, bName, c0, cOut, cIn, scale, act, size, mask, src, dst) {
      const cStride = shape(wName)[1];
      passes.push({ kind: 'dense', size, gIn: groups(cIn), gOut: groups(cOut), wOff: nBlocks, bOff: nBias, act, mask,
                    pb: null, prevSize: 0, src, dst });
      const b = packBlocks(t(wName), cOut, cIn, c0, cStride, scale);
      const bias = packBias(bName ? t(bName) : null, cOut, scale);
      blocks.push(b); biases.push(bias);
      nBlocks += b.length / 16; nBias += bias.length / 4;
    }

    function addFirst(wName, bName, cF, poseDim, size, mask, prevSize, src, dst) {
      const [c, cStride] = shape(wName), w = t(wName), b = t(bName);
      firsts.push({ w, b, c, cStride, cF, poseDim, pbOff: nFrame });
      passes.push({ kind: 'first', size, gIn: 0, gOut: groups(c), wOff: 0, bOff: 0, act: 1, mask, pb: firsts.length - 1,
                    prevSize, src, dst });
      nFrame += groups(c);
    }

    const fp = 'face_morpher.siren.', fs = faceBox.height;
    addFirst(`${fp}sine_layers.0.linear.weight`, `${fp}sine_layers.0.linear.bias`, 0, FACE_POSE, fs, null, 0, 'B', 'A');
    let cur = 'A';
    for (let j = 1; j < FACE_LAYERS; j++) {
      const nxt = cur === 'A' ? 'B' : 'A';
      addDense(`${fp}sine_layers.${j}.linear.weight`, `${fp}sine_layers.${j}.linear.bias`, 0, 128, 128, OMEGA_0, 1, fs, null, cur, nxt);
      cur = nxt;
    }
    addDense(`${fp}last_linear.weight`, `${fp}last_linear.bias`, 0, 4, 128, 1, 0, fs, null, cur, 'FACE');

    let prevSize = 0, cF = 0, nxt = 'B';
    BODY_LEVELS.forEach(([res, layers, width, out], l) => {
      const name = j => `body_morpher.siren_layers.${l}.${j}.linear`;
      addFirst(`${name(0)}.weight`, `${name(0)}.bias`, cF, NUM_POSE, res, l, prevSize, 'B', 'A');
      cur = 'A';
      for (let j = 1; j < layers; j++) {
        nxt = cur === 'A' ? 'B' : 'A';
        addDense(`${name(j)}.weight`, `${name(j)}.bias`, 0, j === layers - 1 ? out : width, width, OMEGA_0, 1, res, l, cur, nxt);
        cur = nxt;
      }
      nxt = cur === 'A' ? 'B' : 'A';
      if (l + 1 < BODY_LEVELS.length) {
        const next = `body_morpher.siren_layers.${l + 1}.0.linear.weight`;
        addDense(next, null, 0, shape(next)[0], out, OMEGA_0, 0, res, l, cur, nxt);
        cF = out;
      } else {
        addDense('body_morpher.last_linear.weight', 'body_morpher.last_linear.bias', 0, 7, out, 1, 0, res, l, cur, nxt);
      }
      prevSize = res;
    });
    passes.push({ kind: 'compose', size: CANVAS, gIn: 0, gOut: 1, wOff: 0, bOff: 0, act: 0, mask: BODY_LEVELS.length - 1,
                  pb: null, prevSize: 0, src: nxt, dst: 'OUT' });

    let region = null;
    if (kyw.tensors.body_region) {
      const packed = t('body_region');
      if (packed.length !== CANVAS * CANVAS / 8) throw new ns.KywError('weights tensor body_region has the wrong size');
      region = new Uint8Array(CANVAS * CANVAS);
      for (let i = 0; i < region.length; i++) region[i] = (packed[i >> 3] >> (7 - (i & 7))) & 1;
    }
    const masks = levelMasks(region), maskOffsets = [];
    let o = 0;
    for (const m of masks) { maskOffsets.push(o); o += m.length; }

    // pose (45 numbers) → Float32Array(frameBlocks * 16): first-layer blocks [30 W_pos x, 30 W_pos y, 30 (W_pose pose + b), 0].
    function frame(pose) {
      const out = new Float32Array(nFrame * 16);
      for (const f of firsts) {
        for (let o = 0; o < f.c; o++) {
          const row = o * f.cStride + f.cF;
          let z = f.b[o];
          for (let i = 0; i < f.poseDim; i++) z += f.w[row + 2 + i] * pose[i];
          const at = (f.pbOff + (o >> 2)) * 16 + (o & 3);
          out[at] = f.w[row] * OMEGA_0;
          out[at + 4] = f.w[row + 1] * OMEGA_0;
          out[at + 8] = z * OMEGA_0;
        }
      }
      return out;
    }

    return { passes, weights: concat(blocks), biases: concat(biases), frameBlocks: nFrame, masks, maskOffsets,
             image: modelSpaceImage(t('character_image')), faceBox, frame, K, CANVAS, name: kyw.header.name || 'character' };
  };
})(typeof self !== 'undefined' ? self : this);
