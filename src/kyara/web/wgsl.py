"""Run the browser's WGSL student (server/static/render/student.wgsl) natively through wgpu-py: the
exactness tests and benchmarks/web_student_speed.py use it (lavapipe / llvmpipe on CPU, any GPU).

    renderer = WgslStudent(parse_web_bytes(student_to_web_bytes(character)))
    rgba = renderer.render(pose_values)     # (512, 512, 4) uint8 sRGB straight RGBA

Needs the optional ``wgpu`` package (dev extra) and a WebGPU adapter (on Linux CPU-only machines:
Debian's mesa-vulkan-drivers). ``adapter()`` returns None rather than raising when there is none.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from kyara.web.plan import CANVAS, NO_MASK, Plan, build_plan, has_lite
from kyara.web.weights import WebWeights

SHADER = Path(__file__).resolve().parent.parent / "server" / "static" / "render" / "student.wgsl"
WORKGROUP = 64
K = 4                       # output groups per invocation (student.wgsl's K)
PARAM_BYTES = 64


def adapter():
    """The first wgpu adapter (high-performance preference), or None when wgpu or an adapter is missing."""
    try:
        import wgpu
    except ImportError:
        return None
    try:
        return wgpu.gpu.request_adapter_sync(power_preference="high-performance")
    except Exception:
        return None


class WgslStudent:
    """The WGSL student on one wgpu device. weights: parsed .kyw (kyara.web.weights.parse_web_bytes);
    lite: run the lite student's plan (kyara.web.plan, lite) instead of the full one."""

    def __init__(self, weights: WebWeights, gpu_adapter=None, lite: bool = False) -> None:
        import wgpu

        self.wgpu = wgpu
        if lite and not has_lite(weights.tensors, weights.header):
            raise ValueError("these browser weights carry no lite plan (export them with lite=True)")
        self.plan: Plan = build_plan(weights.tensors, weights.header["face_box"],
                                     weights.header["lite"] if lite else None)
        self.adapter = gpu_adapter or adapter()
        if self.adapter is None:
            raise RuntimeError("no WebGPU adapter (install mesa-vulkan-drivers for a CPU one)")
        need = self._activation_bytes()
        limits = {"max-storage-buffer-binding-size": max(need, 128 << 20), "max-buffer-size": max(need, 256 << 20),
                  "max-storage-buffers-per-shader-stage": 8}
        self.device = self.adapter.request_device_sync(required_limits=limits)
        self._build()

    def _activation_bytes(self) -> int:
        p = self.plan
        return max(16 * max(x.g_in, x.g_out) * x.size * x.size for x in p.passes)

    def _buffer(self, data: np.ndarray | None = None, size: int | None = None, extra=0):
        usage = self.wgpu.BufferUsage.STORAGE | self.wgpu.BufferUsage.COPY_DST | self.wgpu.BufferUsage.COPY_SRC | extra
        if data is not None:
            return self.device.create_buffer_with_data(data=np.ascontiguousarray(data), usage=usage)
        return self.device.create_buffer(size=max(16, size), usage=usage)

    def _build(self) -> None:
        wgpu, device, plan = self.wgpu, self.device, self.plan
        face = plan.face_box["height"]
        act = self._activation_bytes()
        self.buffers = {"A": self._buffer(size=act), "B": self._buffer(size=act),
                        "FACE": (self._buffer(plan.face_init) if plan.face_init is not None
                                 else self._buffer(size=16 * face * face)),   # lite: starts as the constant face
                        "OUT": self._buffer(size=16 * CANVAS * CANVAS, extra=wgpu.BufferUsage.COPY_SRC)}
        weights = self._buffer(plan.weights)
        biases = self._buffer(plan.biases)
        masks = self._buffer(plan.masks)
        self.frame_buffer = self._buffer(size=plan.frame_blocks * 64)
        image = self._buffer(plan.image.reshape(-1, 4))
        dummy = self._buffer(size=16)
        module = device.create_shader_module(code=SHADER.read_text())
        storage = lambda b, ro=True: {"binding": b, "visibility": wgpu.ShaderStage.COMPUTE,   # noqa: E731
                                      "buffer": {"type": "read-only-storage" if ro else "storage"}}
        layout = device.create_bind_group_layout(entries=[
            {"binding": 0, "visibility": wgpu.ShaderStage.COMPUTE, "buffer": {"type": "uniform"}},
            storage(1), storage(2), storage(3), storage(4, ro=False), storage(5), storage(6), storage(7), storage(8)])
        pipeline_layout = device.create_pipeline_layout(bind_group_layouts=[layout])
        pipelines = {kind: device.create_compute_pipeline(layout=pipeline_layout,
                                                          compute={"module": module, "entry_point": kind})
                     for kind in ("first", "dense", "compose")}
        self.steps = []
        for p in plan.passes:
            params = np.zeros(PARAM_BYTES // 4, np.uint32)
            npix = p.size * p.size
            pb_off = plan.firsts[p.pb].pb_off if p.pb is not None else 0
            params[:13] = [npix, p.size, p.g_in, p.g_out, p.w_off, p.b_off, p.act,
                           NO_MASK if p.mask is None else plan.mask_offsets[p.mask], pb_off, p.prev_size,
                           plan.face_box["top"], plan.face_box["left"], face]
            uniform = device.create_buffer_with_data(data=params, usage=wgpu.BufferUsage.UNIFORM)
            src, dst = self.buffers[p.src], self.buffers[p.dst]
            face_binding = self.buffers["FACE"] if p.dst != "FACE" else dummy
            entries = [uniform, weights, biases, src, dst, masks, self.frame_buffer, face_binding, image]
            group = device.create_bind_group(layout=layout, entries=[
                {"binding": i, "resource": {"buffer": b, "offset": 0, "size": b.size}} for i, b in enumerate(entries)])
            groups_y = 1 if p.kind == "compose" else (p.g_out + K - 1) // K
            self.steps.append((pipelines[p.kind], group, ((npix + WORKGROUP - 1) // WORKGROUP, groups_y, 1)))

    def submit(self, pose: np.ndarray) -> None:
        """Queue one frame for pose (45,) without reading it back (for timing)."""
        self.device.queue.write_buffer(self.frame_buffer, 0, self.plan.frame(pose))
        encoder = self.device.create_command_encoder()
        compute = encoder.begin_compute_pass()
        for pipeline, group, count in self.steps:
            compute.set_pipeline(pipeline)
            compute.set_bind_group(0, group)
            compute.dispatch_workgroups(*count)
        compute.end()
        self.device.queue.submit([encoder.finish()])

    def read(self) -> np.ndarray:
        """The last frame: (512, 512, 4) uint8 sRGB straight RGBA (waits for the GPU)."""
        data = np.frombuffer(self.device.queue.read_buffer(self.buffers["OUT"]), np.float32)
        return data.reshape(CANVAS, CANVAS, 4).astype(np.uint8)

    def render(self, pose: np.ndarray) -> np.ndarray:
        """pose (45,) → (512, 512, 4) uint8 sRGB straight RGBA."""
        self.submit(pose)
        return self.read()
