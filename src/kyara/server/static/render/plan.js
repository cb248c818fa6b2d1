// The student forward as a list of shader passes plus packed weights (JS mirror of kyara/web/plan.py;
// both WebGL2 and WebGPU hosts run this plan). See student.wgsl's header for the data layout:
// channel groups of 4, 4x4 weight blocks (float j*4 + r of block (og, ig) = 30 W[4og + r, 4ig + j]
// for sine layers), output groups padded to a multiple of K = 4.
(function (root) {
  'use strict';
  const ns = root.kyaraRender = root.kyaraRender || {};
  const OMEGA_0 = 30, K = 4, CANVAS = 512, NUM_POSE = 45, FACE_POSE = 39;
  // the shipped student (kyara.student): face 8 sine layers of 128; body 3 layers a level at 128², 256², 512²,
  // THA4's hidden widths by default (a student may have others: kyara distill --body-widths; body_morpher.py
  // levels_for_widths: each level's last layer emits the next level's width, the finest its own)
  const FACE_LAYERS = 8, BODY_SIZES = [128, 256, 512], BODY_LAYERS = 3, BODY_WIDTHS = [360, 180, 90], MAX_WIDTH = 1024;

  const groups = c => (c + 3) >> 2;
  const paddedGroups = c => Math.ceil(groups(c) / K) * K;

  // The body shape a weights file's tensors declare: {widths: its levels' first layers' output rows, layers:
  // the layers of level 0}, checked to be integers in [1, MAX_WIDTH] and [1, 16]; the shapes then hold the
  // rest (studentShapes), as kyara.student.body_morpher.shape_from_state does for .kyara files.
  ns.bodyShapeOf = function (tensors) {
    const widths = BODY_SIZES.map((_, l) => {
      const t = tensors[`body_morpher.siren_layers.${l}.0.linear.weight`];
      return t ? t.shape[0] : BODY_WIDTHS[l];   // missing: studentShapes' check names it
    });
    if (!widths.every(w => Number.isInteger(w) && w >= 1 && w <= MAX_WIDTH))
      throw new ns.KywError(`weights: body widths [${widths}] are not integers in [1, ${MAX_WIDTH}]`);
    let layers = 0;
    while (layers <= 16 && `body_morpher.siren_layers.0.${layers}.linear.weight` in tensors) layers++;
    if (layers > 16) throw new ns.KywError('weights: more than 16 body layers a level');
    return { widths, layers: layers || BODY_LAYERS };
  };

  // Expected tensor shapes of a student (.kyara names) with this body shape (default THA4's), checked by parseKyw.
  ns.studentShapes = function ({ widths = BODY_WIDTHS, layers = BODY_LAYERS } = {}) {
    const BODY_LEVELS = BODY_SIZES.map((size, l) => [size, layers, widths[l], widths[Math.min(l + 1, BODY_SIZES.length - 1)]]);
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

  // (512, 512) region (Uint8Array 0/1, or null) → masks at 512 / 2^(levels-1) … 512 (Uint8Array 0/1):
  // the pixels each body level evaluates (kyara.student.pixels.PixelSet.from_mask: bilinear taps of
  // the finer level).
  function levelMasks(region, levels) {
    if (!region) return Array.from({ length: levels }, (_, l) => new Uint8Array((CANVAS >> (levels - 1 - l)) ** 2).fill(1));
    const masks = [region];
    for (let l = 1; l < levels; l++) {
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

  // (S, S) 0/1 pixels → (size, size) Uint8Array: the pixels bilinear resampling from size to S
  // (align_corners=False, any ratio) reads for them (kyara/web/plan.py tap_mask).
  function tapMask(fine, size) {
    const s = Math.round(Math.sqrt(fine.length)), coarse = new Uint8Array(size * size);
    const lo = new Int32Array(s), hi = new Int32Array(s);
    for (let i = 0; i < s; i++) {
      const src = Math.max((i + 0.5) * (size / s) - 0.5, 0);
      lo[i] = Math.min(Math.floor(src), size - 1); hi[i] = Math.min(lo[i] + 1, size - 1);
    }
    for (let r = 0; r < s; r++) for (let c = 0; c < s; c++) if (fine[r * s + c]) {
      coarse[lo[r] * size + lo[c]] = 1; coarse[lo[r] * size + hi[c]] = 1;
      coarse[hi[r] * size + lo[c]] = 1; coarse[hi[r] * size + hi[c]] = 1;
    }
    return coarse;
  }

  // The lite body levels' masks on grids sizes, coarse to fine (kyara/web/plan.py lite_level_masks).
  function liteLevelMasks(region, sizes) {
    const fine = region || new Uint8Array(CANVAS * CANVAS).fill(1);
    const masks = [tapMask(fine, sizes[sizes.length - 1])];
    for (let l = sizes.length - 2; l >= 0; l--) masks.unshift(tapMask(masks[0], sizes[l]));
    return masks;
  }

  // The lite body grids from the header's "lite" entry (kyara/web/plan.py lite_sizes).
  function liteSizes(lite, levels) {
    let sizes = lite.body_sizes;
    if (sizes === undefined && Number.isInteger(lite.body_grid))
      sizes = Array.from({ length: levels }, (_, i) => lite.body_grid >> (levels - 1 - i));
    if (!Array.isArray(sizes) || sizes.length !== levels || !sizes.every(Number.isInteger) || sizes[0] < 1 ||
        sizes[levels - 1] > CANVAS || sizes.some((x, i) => i && x < sizes[i - 1]))
      throw new ns.KywError(`weights: lite body sizes ${JSON.stringify(sizes)} are not ${levels} ascending grid sides in [1, ${CANVAS}]`);
    return sizes;
  }

  // Does a parsed .kyw carry the lite student's plan (kyara.web.weights, lite=True)?
  ns.hasLite = kyw => !!(kyw.header.lite && typeof kyw.header.lite === 'object' && kyw.tensors.lite_face_mask &&
                         kyw.tensors.lite_face_constant);

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

  const countLayers = (tensors, prefix) => { let n = 0; while (`${prefix}${n}.linear.weight` in tensors) n++; return n; };

  // kyw = parseKyw(...) → plan {passes, weights, biases, frameBlocks, masks, maskOffsets, firstOffsets, image,
  // faceBox, faceInit, lite, work, frame(pose)}.
  // The structure (layers, widths, levels at 512 / 2^k) is read from the tensors (any size of student).
  // options.lite: the lite student's plan (kyara/web/plan.py's docstring: face passes on the movable
  // face pixels, body levels on the coarse grid, compose upsampling the head outputs); throws KywError
  // when the weights carry none. plan.work: multiply-adds per frame (the page's full/lite choice).
  ns.buildPlan = function buildPlan(kyw, options = {}) {
    const t = name => kyw.tensors[name].data;
    const shape = name => kyw.tensors[name].shape;
    const faceBox = kyw.header.face_box;
    const lite = !!options.lite;
    let levelCount = 0;
    while (`body_morpher.siren_layers.${levelCount}.0.linear.weight` in kyw.tensors) levelCount++;
    let sizes = Array.from({ length: levelCount }, (_, i) => CANVAS >> (levelCount - 1 - i));
    let faceMaskIndex = null, faceMask = null, faceInit = null;
    if (lite) {
      if (!ns.hasLite(kyw)) throw new ns.KywError('these weights carry no lite student (re-export them)');
      sizes = liteSizes(kyw.header.lite, levelCount);
      const fsz = faceBox.height, packed = t('lite_face_mask'), constant = t('lite_face_constant');
      if (packed.length !== Math.ceil(fsz * fsz / 8) || constant.length !== fsz * fsz * 4)
        throw new ns.KywError('weights: the lite face mask or constant face has the wrong size');
      faceMask = new Uint8Array(fsz * fsz);
      for (let i = 0; i < faceMask.length; i++) faceMask[i] = (packed[i >> 3] >> (7 - (i & 7))) & 1;
      faceInit = Float32Array.from(constant);
      faceMaskIndex = levelCount + 1;
    }
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

    // a dense layer from its whole weight tensor: (out, in) = its shape
    const dense = (prefix, bias, scale, act, size, mask, src, dst) => {
      const [cOut, cIn] = shape(`${prefix}.weight`);
      addDense(`${prefix}.weight`, bias ? `${prefix}.bias` : null, 0, cOut, cIn, scale, act, size, mask, src, dst);
    };
    const fp = 'face_morpher.siren.', fs = faceBox.height;
    const faceW0 = `${fp}sine_layers.0.linear.weight`;
    const fm = faceMaskIndex;
    addFirst(faceW0, `${fp}sine_layers.0.linear.bias`, 0, shape(faceW0)[1] - 2, fs, fm, 0, 'B', 'A');
    let cur = 'A';
    for (let j = 1; j < countLayers(kyw.tensors, `${fp}sine_layers.`); j++) {
      const nxt = cur === 'A' ? 'B' : 'A';
      dense(`${fp}sine_layers.${j}.linear`, true, OMEGA_0, 1, fs, fm, cur, nxt);
      cur = nxt;
    }
    dense(`${fp}last_linear`, true, 1, 0, fs, fm, cur, 'FACE');

    const levels = levelCount;
    // activations ping-pong between A and B; each pass reads the buffer the one before wrote (a level's
    // first layer reads the projection the level below left)
    const other = b => (b === 'A' ? 'B' : 'A');
    let prevSize = 0, cF = 0;
    cur = 'B';
    for (let l = 0; l < levels; l++) {
      const res = sizes[l], prefix = `body_morpher.siren_layers.${l}.`;
      const layers = countLayers(kyw.tensors, prefix);
      const w0 = `${prefix}0.linear.weight`;
      addFirst(w0, `${prefix}0.linear.bias`, cF, shape(w0)[1] - 2 - cF, res, l, prevSize, cur, other(cur));
      cur = other(cur);
      for (let j = 1; j < layers; j++) {
        dense(`${prefix}${j}.linear`, true, OMEGA_0, 1, res, l, cur, other(cur));
        cur = other(cur);
      }
      const out = shape(`${prefix}${layers - 1}.linear.weight`)[0];
      if (l + 1 < levels) {
        const next = `body_morpher.siren_layers.${l + 1}.0.linear.weight`;
        addDense(next, null, 0, shape(next)[0], out, OMEGA_0, 0, res, l, cur, other(cur));
        cF = out;
      } else {
        dense('body_morpher.last_linear', true, 1, 0, res, l, cur, other(cur));
      }
      cur = other(cur);
      prevSize = res;
    }
    let region = null;
    if (kyw.tensors.body_region) {
      const packed = t('body_region');
      if (packed.length !== CANVAS * CANVAS / 8) throw new ns.KywError('weights tensor body_region has the wrong size');
      region = new Uint8Array(CANVAS * CANVAS);
      for (let i = 0; i < region.length; i++) region[i] = (packed[i >> 3] >> (7 - (i & 7))) & 1;
    }
    let masks;
    if (!lite) {
      passes.push({ kind: 'compose', size: CANVAS, gIn: 0, gOut: 1, wOff: 0, bOff: 0, act: 0, mask: levels - 1,
                    pb: null, prevSize: 0, src: cur, dst: 'OUT' });
      masks = levelMasks(region, levels);
    } else {
      passes.push({ kind: 'compose', size: CANVAS, gIn: 0, gOut: 1, wOff: 0, bOff: 0, act: 0, mask: levels,
                    pb: null, prevSize: sizes[levels - 1], src: cur, dst: 'OUT' });
      masks = liteLevelMasks(region, sizes);
      masks.push(region || new Uint8Array(CANVAS * CANVAS).fill(1), faceMask);
    }
    const maskOffsets = [];
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

    // multiply-adds per frame: each layer pass's weights times the pixels its mask lets through
    const count = m => m.reduce((n, v) => n + v, 0);
    const work = passes.reduce((n, p) => {
      if (p.kind === 'compose') return n;
      const pixels = p.mask === null ? p.size * p.size : count(masks[p.mask]);
      return n + pixels * 16 * p.gOut * (p.kind === 'first' ? 1 : p.gIn);
    }, 0);
    return { passes, weights: concat(blocks), biases: concat(biases), frameBlocks: nFrame, masks, maskOffsets,
             faceInit, lite, work,
             firstOffsets: firsts.map(f => f.pbOff),   // frame-buffer block offset of each first layer (pass.pb)
             image: modelSpaceImage(t('character_image')), faceBox, frame, K, CANVAS, name: kyw.header.name || 'character' };
  };
})(typeof self !== 'undefined' ? self : this);
