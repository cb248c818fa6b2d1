// Pose packets for browser render mode (kyara/web/pose_packet.py): 192 bytes, little-endian: "KP",
// uint8 version 1, uint8 0, uint32 seq, uint32 inputs applied, 45 float32 pose values.
(function (root) {
  'use strict';
  const ns = root.kyaraRender = root.kyaraRender || {};
  const HEADER = 12, COUNT = 45, BYTES = HEADER + 4 * COUNT;
  ns.POSE_PACKET_BYTES = BYTES;

  // true when an ArrayBuffer looks like a pose packet (a WebSocket may also carry frames)
  ns.isPosePacket = buffer => buffer.byteLength === BYTES && new Uint8Array(buffer, 0, 3).every((b, i) => b === [0x4b, 0x50, 1][i]);

  // ArrayBuffer → {seq, inputs, pose: Float32Array(45)}; throws Error when malformed.
  ns.decodePosePacket = function decodePosePacket(buffer) {
    if (!(buffer instanceof ArrayBuffer) || buffer.byteLength !== BYTES)
      throw new Error(`a pose packet is ${BYTES} bytes, got ${buffer && buffer.byteLength}`);
    const view = new DataView(buffer);
    if (view.getUint8(0) !== 0x4b || view.getUint8(1) !== 0x50 || view.getUint8(2) !== 1)
      throw new Error('not a version-1 pose packet');
    const pose = new Float32Array(COUNT);
    for (let i = 0; i < COUNT; i++) {
      pose[i] = view.getFloat32(HEADER + 4 * i, true);
      if (!Number.isFinite(pose[i])) throw new Error('pose packet holds a non-finite value');
    }
    return { seq: view.getUint32(4, true), inputs: view.getUint32(8, true), pose };
  };
})(typeof self !== 'undefined' ? self : this);
