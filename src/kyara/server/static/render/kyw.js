// Browser weights (.kyw) loader: validates and maps a kyara student character (docs/file-format.md,
// "Browser weights (.kyw)"; written by kyara.web.weights.student_to_web_bytes). Classic script: it
// must also load from file:// pages, where ES modules are blocked. Defines self.kyaraRender.parseKyw.
(function (root) {
  'use strict';
  const ns = root.kyaraRender = root.kyaraRender || {};
  const MAGIC = [0x4b, 0x59, 0x57, 0x00];            // "KYW\0"
  const VERSION = 1;
  const PREAMBLE = 16;
  const MAX_FILE_BYTES = 32 << 20;
  const MAX_HEADER_BYTES = 1 << 20;
  const SIZES = { float16: 2, float32: 4, uint8: 1 };

  class KywError extends Error {}
  ns.KywError = KywError;
  ns.KYW_VERSION = VERSION;
  ns.KYW_MAX_FILE_BYTES = MAX_FILE_BYTES;

  function halfToFloat(h) {
    const s = (h & 0x8000) ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
    if (e === 0) return s * f * Math.pow(2, -24);
    if (e === 31) return f ? NaN : s * Infinity;
    return s * (1 + f / 1024) * Math.pow(2, e - 15);
  }

  // ArrayBuffer → {header, tensors: {name: {shape, data: Float32Array | Uint8Array}}}. Throws KywError
  // with a message for the page on any malformed, oversized or unknown-version file.
  ns.parseKyw = function parseKyw(buffer, expected) {
    if (!(buffer instanceof ArrayBuffer)) throw new KywError('weights: expected binary data');
    if (buffer.byteLength > MAX_FILE_BYTES)
      throw new KywError(`weights file is ${buffer.byteLength} bytes, more than the ${MAX_FILE_BYTES} allowed`);
    if (buffer.byteLength < PREAMBLE)
      throw new KywError(`weights file is ${buffer.byteLength} bytes, too short to be a kyara weights file`);
    const bytes = new Uint8Array(buffer), view = new DataView(buffer);
    if (!MAGIC.every((b, i) => bytes[i] === b)) throw new KywError('not a kyara browser weights file (bad magic)');
    const version = view.getUint32(4, true);
    if (version !== VERSION)
      throw new KywError(`browser weights format version ${version} is not supported by this page (it reads version ${VERSION}); re-export the weights or reload the page`);
    const headerLen = view.getUint32(8, true), dataLen = view.getUint32(12, true);
    if (headerLen > MAX_HEADER_BYTES || PREAMBLE + headerLen + dataLen !== buffer.byteLength)
      throw new KywError(`weights file sizes disagree: header ${headerLen} + data ${dataLen} bytes, file ${buffer.byteLength} bytes (truncated or corrupted)`);
    let header;
    try {
      header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(PREAMBLE, PREAMBLE + headerLen)));
    } catch (e) {
      throw new KywError(`weights header is not valid JSON (corrupted file): ${e.message}`);
    }
    if (!header || header.format !== 'kyara-web-student' || typeof header.tensors !== 'object')
      throw new KywError('weights header is not a kyara-web-student header');
    const base = PREAMBLE + headerLen, tensors = {};
    for (const [name, spec] of Object.entries(header.tensors)) {
      const size = SIZES[spec.dtype];
      if (!size || !Array.isArray(spec.shape) || !spec.shape.every(d => Number.isInteger(d) && d >= 0))
        throw new KywError(`weights tensor ${name}: bad dtype or shape`);
      const count = spec.shape.reduce((a, b) => a * b, 1);
      if (spec.nbytes !== count * size || !Number.isInteger(spec.offset) || spec.offset % 16 || spec.offset < 0 ||
          spec.offset + spec.nbytes > dataLen)
        throw new KywError(`weights tensor ${name}: offset/size do not fit its shape or the file (corrupted)`);
      let data;
      if (spec.dtype === 'uint8') data = bytes.slice(base + spec.offset, base + spec.offset + count);
      else if (spec.dtype === 'float32') data = new Float32Array(buffer.slice(base + spec.offset, base + spec.offset + spec.nbytes));
      else {
        const half = new Uint16Array(buffer.slice(base + spec.offset, base + spec.offset + spec.nbytes));
        data = new Float32Array(count);
        for (let i = 0; i < count; i++) data[i] = halfToFloat(half[i]);
      }
      tensors[name] = { shape: spec.shape, data };
    }
    // expected: {name: shape} or a function of the tensors giving it (a shape that depends on the file's own widths)
    if (typeof expected === 'function') expected = expected(tensors);
    for (const [name, shape] of Object.entries(expected || {})) {
      const t = tensors[name];
      if (!t) throw new KywError(`weights file has no tensor ${name}`);
      if (t.shape.length !== shape.length || t.shape.some((d, i) => shape[i] !== null && d !== shape[i]))
        throw new KywError(`weights tensor ${name} has shape [${t.shape}], expected [${shape.map(d => d === null ? '*' : d)}]`);
    }
    return { header, tensors };
  };

  // Base64 (the static site embeds the weights: file:// pages cannot fetch sibling files) → ArrayBuffer.
  ns.base64ToBuffer = function (text) {
    const bin = atob(text), out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  };
})(typeof self !== 'undefined' ? self : this);
