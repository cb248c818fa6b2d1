// kyara student forward in WGSL compute shaders (issue 14). One file for the browser (WebGPU, via
// render/student_webgpu.js) and for native wgpu (kyara.web.wgsl, tests and benchmarks).
//
// Activations live in storage buffers as vec4 channel groups, group-major: value of channel group g
// at pixel p is buf[g * npix + p] (pixel p = row * size + col, row 0 at the top). A layer's weights
// are 4x4 blocks, block (og, ig) = weights[w_off + og * g_in + ig], with (block * x)[r] =
// sum_j W[4og + r, 4ig + j] x[j]; omega_0 = 30 is already folded into sine layers' weights and biases.
//
// Passes (the host builds the list, see kyara/web/plan.py and render/plan.js):
//   first   first sine layer of a SIREN level: position and pose (the pose part arrives per frame as
//           frame[pb_off + og] = [30 W_pos x, 30 W_pos y, 30 (W_pose pose + b), 0]) plus, above the
//           coarsest level, the previous level's projected features upsampled bilinearly exactly as
//           F.interpolate(align_corners=False) (W up(f) = up(W f): the projection ran at the coarse level).
//   dense   act(W x + b) for hidden layers (sin), projections (no bias, no sin) and heads (bias, no sin).
//   compose grid_sample(face-edited image, identity + flow; bilinear, border, align_corners=False),
//           blend (1 - a) warped + a colour, then model space -> 8-bit sRGB as kyara.image.tensor_to_rgba_u8
//           (written as floats 0..255).
// Pixels outside the level's mask (the student's region and the taps it needs) are skipped; the
// compose pass treats their head outputs as zero (no flow, no blend: the face-edited input).
// The lite student (kyara.student.lite) runs the same passes on less: face passes masked to the
// movable face pixels (the host starts the face buffer as the constant face, which masked pixels
// keep), body levels on a coarse grid, and compose (prev_size = that grid's side, else 0) samples
// the coarse head outputs bilinearly (align_corners=False) at each region pixel.

struct Params {
  npix: u32, size: u32, g_in: u32, g_out: u32,
  w_off: u32, b_off: u32, act: u32, mask_off: u32,
  pb_off: u32, prev_size: u32, face_top: u32, face_left: u32,
  face_size: u32, pad0: u32, pad1: u32, pad2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> weights: array<mat4x4<f32>>;
@group(0) @binding(2) var<storage, read> biases: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> dst: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> masks: array<u32>;
@group(0) @binding(6) var<storage, read> frame: array<mat4x4<f32>>;
@group(0) @binding(7) var<storage, read> face: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read> image: array<vec4<f32>>;

const K: u32 = 4u;                 // output channel groups per invocation (16 channels)
const NO_MASK: u32 = 0xffffffffu;

fn in_mask(p: u32) -> bool {
  return P.mask_off == NO_MASK || masks[P.mask_off + p] != 0u;
}

@compute @workgroup_size(64)
fn dense(@builtin(global_invocation_id) id: vec3<u32>) {
  let p = id.x;
  if (p >= P.npix || !in_mask(p)) { return; }
  // The host pads every layer to a multiple of K output groups (zero blocks), so the K accumulators
  // need no bounds inside the loop; only the stores are guarded.
  let og0 = id.y * K;
  var a0 = biases[P.b_off + og0];
  var a1 = biases[P.b_off + og0 + 1u];
  var a2 = biases[P.b_off + og0 + 2u];
  var a3 = biases[P.b_off + og0 + 3u];
  var w = P.w_off + og0 * P.g_in;
  let g = P.g_in;
  for (var ig = 0u; ig < g; ig++) {
    let x = src[ig * P.npix + p];
    a0 += weights[w] * x;
    a1 += weights[w + g] * x;
    a2 += weights[w + 2u * g] * x;
    a3 += weights[w + 3u * g] * x;
    w += 1u;
  }
  if (P.act == 1u) { a0 = sin(a0); a1 = sin(a1); a2 = sin(a2); a3 = sin(a3); }
  store(og0, p, a0);
  store(og0 + 1u, p, a1);
  store(og0 + 2u, p, a2);
  store(og0 + 3u, p, a3);
}

fn store(og: u32, p: u32, v: vec4<f32>) {
  if (og < P.g_out) { dst[og * P.npix + p] = v; }
}

// Bilinear taps along one axis from a grid of in_size to this pass's grid of P.size (F.interpolate,
// align_corners=False, any ratio: x2 between the full student's levels, x3 / x4 between the lite
// student's, 512/G in the lite compose): (lo, hi) source indices and the weight of hi. The source
// coordinate (i + 0.5) in / size - 0.5 is computed as one division of integers, exact whenever it is
// representable (every ratio used here), so the taps match the pixel masks the host derived.
fn up_taps(i: u32, in_size: u32) -> vec3<f32> {
  let s = max(f32((2u * i + 1u) * in_size) / f32(2u * P.size) - 0.5, 0.0);
  let lo = min(floor(s), f32(in_size - 1u));
  let hi = min(lo + 1.0, f32(in_size - 1u));
  return vec3<f32>(lo, hi, s - lo);
}

@compute @workgroup_size(64)
fn first(@builtin(global_invocation_id) id: vec3<u32>) {
  let p = id.x;
  if (p >= P.npix || !in_mask(p)) { return; }
  let col = p % P.size;
  let row = p / P.size;
  let sz = f32(P.size);
  let pos = vec4<f32>(f32(2u * col + 1u) / sz - 1.0, f32(2u * row + 1u) / sz - 1.0, 1.0, 0.0);
  let og0 = id.y * K;
  let n = min(K, P.g_out - og0);
  let ps = P.prev_size;
  let tx = up_taps(col, max(ps, 1u));
  let ty = up_taps(row, max(ps, 1u));
  let x0 = u32(tx.x); let x1 = u32(tx.y); let y0 = u32(ty.x); let y1 = u32(ty.y);
  let wx = tx.z; let wy = ty.z;
  for (var k = 0u; k < n; k++) {
    let og = og0 + k;
    var z = frame[P.pb_off + og] * pos;
    if (ps > 0u) {
      let base = og * ps * ps;
      let top = (1.0 - wx) * src[base + y0 * ps + x0] + wx * src[base + y0 * ps + x1];
      let bottom = (1.0 - wx) * src[base + y1 * ps + x0] + wx * src[base + y1 * ps + x1];
      z += (1.0 - wy) * top + wy * bottom;
    }
    dst[og * P.npix + p] = sin(z);
  }
}

// The face-edited input at integer pixel (col, row): the face morpher's output inside its box.
fn edited(col: u32, row: u32) -> vec4<f32> {
  if (row >= P.face_top && row < P.face_top + P.face_size && col >= P.face_left && col < P.face_left + P.face_size) {
    return face[(row - P.face_top) * P.face_size + (col - P.face_left)];
  }
  return image[row * P.size + col];
}

fn srgb(x: vec3<f32>) -> vec3<f32> {
  let c = clamp(x, vec3<f32>(0.0), vec3<f32>(1.0));
  return select(1.055 * pow(c, vec3<f32>(1.0 / 2.4)) - 0.055, c * 12.92, c <= vec3<f32>(0.003130804953560372));
}

@compute @workgroup_size(64)
fn compose(@builtin(global_invocation_id) id: vec3<u32>) {
  let p = id.x;
  if (p >= P.npix) { return; }
  let col = p % P.size;
  let row = p / P.size;
  var h0 = vec4<f32>(0.0);
  var h1 = vec4<f32>(0.0);
  if (in_mask(p)) {
    let hs = P.prev_size;
    if (hs == 0u) { h0 = src[p]; h1 = src[P.npix + p]; }
    else {
      let tx = up_taps(col, hs);
      let ty = up_taps(row, hs);
      let i00 = u32(ty.x) * hs + u32(tx.x); let i01 = u32(ty.x) * hs + u32(tx.y);
      let i10 = u32(ty.y) * hs + u32(tx.x); let i11 = u32(ty.y) * hs + u32(tx.y);
      let n = hs * hs;
      h0 = (1.0 - ty.z) * ((1.0 - tx.z) * src[i00] + tx.z * src[i01]) + ty.z * ((1.0 - tx.z) * src[i10] + tx.z * src[i11]);
      h1 = (1.0 - ty.z) * ((1.0 - tx.z) * src[n + i00] + tx.z * src[n + i01])
         + ty.z * ((1.0 - tx.z) * src[n + i10] + tx.z * src[n + i11]);
    }
  }
  let sz = f32(P.size);
  let gx = f32(2u * col + 1u) / sz - 1.0 + h0.x;
  let gy = f32(2u * row + 1u) / sz - 1.0 + h0.y;
  let ix = clamp(((gx + 1.0) * sz - 1.0) * 0.5, 0.0, sz - 1.0);
  let iy = clamp(((gy + 1.0) * sz - 1.0) * 0.5, 0.0, sz - 1.0);
  let fx = floor(ix);
  let fy = floor(iy);
  let c0 = u32(fx); let r0 = u32(fy);
  let c1 = min(c0 + 1u, P.size - 1u); let r1 = min(r0 + 1u, P.size - 1u);
  // grid_sample's corner weights (a corner at index size has weight 0 after clamping)
  let nw = (fx + 1.0 - ix) * (fy + 1.0 - iy);
  let ne = (ix - fx) * (fy + 1.0 - iy);
  let sw = (fx + 1.0 - ix) * (iy - fy);
  let se = (ix - fx) * (iy - fy);
  let warped = nw * edited(c0, r0) + ne * edited(c1, r0) + sw * edited(c0, r1) + se * edited(c1, r1);
  let a = h0.z;
  let color = vec4<f32>(h0.w, h1.x, h1.y, h1.z);
  let v = (1.0 - a) * warped + a * color;
  let unit = (v + 1.0) * 0.5;
  let rgba = vec4<f32>(srgb(unit.xyz), clamp(unit.w, 0.0, 1.0));
  dst[p] = round(rgba * 255.0);
}
