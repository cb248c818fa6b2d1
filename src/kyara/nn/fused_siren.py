"""Fused SIREN layers in Triton, for training (autograd) and inference, with the PyTorch path as fallback.

Two differentiable operations cover every sine layer of the student (kyara.nn.siren's maths, channels last):

- ``sine_linear(x, weight, bias)``: y = sin(ω₀ (x Wᵀ + b)), x (..., K) → (..., N). One kernel: the
  matrix product (fp32 accumulation; TF32, exact fp32 or bf16 inputs, see ``precision``) with the bias,
  ω₀, the sine and, when a gradient is needed, ω₀·cos(ω₀ z) written in its epilogue. The backward pass
  multiplies the upstream gradient by that saved factor and runs two cuBLAS products.
- ``sine_first_layer(position, w_position, pose_bias, low, taps, tap_weights)``: the first layer of a
  level, whose input is [bilinear ×2 upsample of the previous level's features, position, pose]
  (``conditioned_first_layer``): y = sin(ω₀ (position W_posᵀ + pose_bias[n] + Σₖ tap_weightₖ · low[n, tapₖ])),
  with low = the previous level's output already projected by this layer's feature weights
  (W·up(f) = up(W·f)). One gather + sine kernel forward; backward one kernel that forms the gradient
  of z and scatter-adds it into low's gradient (atomics: summation order, hence the last bits,
  varies from run to run), the pose bias's and the position weights'.

Both are ``torch.autograd.Function``s; without autograd they launch only the forward kernel (no cos
saved), which is also what inference runs, fp16 in and out with fp32 accumulation (the sine's argument
is formed in fp32: fp16 eager rounds z before multiplying it by ω₀ = 30).

- ``sine_chain(...)`` (inference only): a whole level in one kernel, for levels at most
  ``CHAIN_MAX_WIDTH`` wide (the face morpher, the body morpher's 512² level): the first layer as above,
  the other sine layers and the projection that follows (the head, or the next level's feature weights),
  with weights (``make_chain``: padded, transposed) and activations on chip. ``chains(False)`` turns it
  off; a failed launch turns it off for the process (``disable_chains``) and levels run layer by layer.

Kernels allocate nothing but their outputs and never synchronise, so they can be captured in CUDA graphs.
Block sizes and warp counts were chosen with ptxas -v for sm_90 (no register spills); speed on a GPU is
what benchmarks/distill_step.py and benchmarks/student_speed.py --kernel-modes measure.

Selecting them: ``use_triton(kernels, device)`` with kernels "auto" | "triton" | "torch". "auto" means
Triton on a CUDA GPU of compute capability ≥ 8.0 when the triton package imports (it ships with CUDA
builds of torch; it is not a dependency of kyara), else the PyTorch path, which stays the reference
and the only path on the CPU. With TRITON_INTERPRET=1 "triton" also runs on CPU tensors through
Triton's interpreter (tests). triton is imported lazily, on first use.
"""
from __future__ import annotations

import importlib.util
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch

from kyara.nn.siren import OMEGA_0

KERNEL_CHOICES = ("auto", "triton", "torch")
PRECISIONS = ("tf32", "ieee", "bf16")
# the DOT constexpr of the kernels per precision of fp32 inputs (3: fp16/bf16 inputs, native products)
DOT_MODES = {"ieee": 0, "tf32": 1, "bf16": 2}
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

_KERNELS: dict = {}      # interpreting() → the jitted kernels (built on first use: no triton import at import time)
_AUTO_DISABLED: str | None = None   # why "auto" stopped choosing Triton in this process (a failed launch)
_PRECISION: str | None = None       # set by matmul_precision(): the default of sine_linear's precision


# -- selection --------------------------------------------------------------------------------------------
def check_kernels(kernels: str, what: str = "kernels") -> str:
    """kernels, validated: one of KERNEL_CHOICES (ValueError naming `what` otherwise)."""
    if kernels not in KERNEL_CHOICES:
        raise ValueError(f"{what} must be one of {', '.join(KERNEL_CHOICES)}; got {kernels!r}")
    return kernels


def interpreting() -> bool:
    """True when Triton's CPU interpreter is on (TRITON_INTERPRET=1): kernels then run on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_available(device: torch.device | str) -> bool:
    """Can the fused kernels run on `device`: CUDA with capability ≥ 8.0 (TF32 tensor cores) and triton
    importable, or a CPU device under TRITON_INTERPRET=1."""
    device = torch.device(device)
    if not triton_importable():
        return False
    if device.type == "cpu":
        return interpreting()
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device)[0] >= 8


def use_triton(kernels: str, device: torch.device | str) -> bool:
    """Whether the switch `kernels` selects the fused kernels on `device`.

    "torch": never. "triton": always, and a one-line RuntimeError when they cannot run there.
    "auto": on a CUDA device where ``triton_available`` (never on the CPU, so CPU behaviour is the
    PyTorch path's), unless an earlier launch failed in this process (``disable_auto``).
    """
    check_kernels(kernels)
    device = torch.device(device)
    if kernels == "torch":
        return False
    if kernels == "triton":
        if not triton_available(device):
            raise RuntimeError(f"kernels='triton' cannot run on {device}: it needs a CUDA GPU of compute "
                               "capability >= 8.0 with the triton package (or TRITON_INTERPRET=1 for CPU tensors)")
        return True
    return _AUTO_DISABLED is None and device.type == "cuda" and triton_available(device)


def disable_auto(reason: str) -> None:
    """Make "auto" choose the PyTorch path for the rest of the process (after a failed kernel launch)."""
    global _AUTO_DISABLED
    if _AUTO_DISABLED is None:
        warnings.warn(f"fused SIREN kernels disabled, using the PyTorch path: {reason}", RuntimeWarning, stacklevel=2)
    _AUTO_DISABLED = reason


def with_fallback(kernels: str, fused, reference, *args):
    """fused(*args) when `kernels` selects Triton on args[0]'s device, else reference(*args). Under "auto"
    a failing fused call (e.g. a kernel that does not compile on this GPU) warns once, switches "auto"
    off for the process and returns reference(*args); under "triton" the error propagates."""
    if not use_triton(kernels, args[0].device):
        return reference(*args)
    if kernels == "triton":
        return fused(*args)
    try:
        return fused(*args)
    except Exception as e:   # noqa: BLE001 - any compile/launch failure falls back, with the reason shown once
        disable_auto(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        return reference(*args)


def probe(device: torch.device | str) -> str | None:
    """Run both fused operations forward and backward on tiny inputs on `device` and compare them with
    the PyTorch maths: None when they agree, else the reason (an exception or a mismatch). Used to
    decide "auto" before a training run compiles its steps. Exact fp32 products on both sides (TF32
    off for the call), so agreement is ~1e-6 and the 1e-3 bound only catches real faults."""
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        return _probe(torch.device(device))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def _probe(device: torch.device) -> str | None:
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.rand(67, 90, generator=g).mul_(2).sub_(1).to(device).requires_grad_()
        w = (torch.rand(90, 90, generator=g) * 2 - 1).mul_(0.0086).to(device).requires_grad_()
        b = (torch.rand(90, generator=g) * 0.02 - 0.01).to(device).requires_grad_()
        y = sine_linear(x, w, b, precision="ieee")
        y.square().sum().backward()
        grads = [t.grad.clone() for t in (x, w, b)]
        for t in (x, w, b):
            t.grad = None
        ref = torch.sin(OMEGA_0 * torch.nn.functional.linear(x, w, b))
        ref.square().sum().backward()
        err = max((y - ref).abs().max().item(),
                  *[((a - t.grad).abs().max() / t.grad.abs().max().clamp_min(1e-12)).item()
                    for a, t in zip(grads, (x, w, b))])
        if not err < 1e-3:
            return f"fused sine layer differs from the PyTorch maths by {err:.3g}"
        position = torch.rand(50, 2, generator=g).to(device) * 2 - 1
        taps = torch.randint(0, 13, (50, 4), generator=g).to(device)
        tw = torch.rand(50, 4, generator=g).to(device)
        low = torch.randn(2, 13, 24, generator=g).to(device).requires_grad_()
        wp = torch.randn(24, 2, generator=g).to(device).mul_(0.5).requires_grad_()
        pb = torch.randn(2, 24, generator=g).to(device).mul_(0.1).requires_grad_()
        y = sine_first_layer(position, wp, pb, low, taps, tw)
        y.sum().backward()
        ref = first_layer_reference(position, wp, pb, low, taps, tw)
        if not (y - ref).abs().max().item() < 1e-3:
            return "fused first layer differs from the PyTorch maths"
        return None
    except Exception as e:   # noqa: BLE001
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


# -- the PyTorch maths of the first layer (reference and fallback) -------------------------------------------
def first_layer_reference(position: torch.Tensor, w_position: torch.Tensor, pose_bias: torch.Tensor,
                          low: torch.Tensor | None, taps: torch.Tensor | None,
                          tap_weights: torch.Tensor | None) -> torch.Tensor:
    """sine_first_layer in plain torch (same operation order as BodyMorpher.features_at)."""
    z = torch.nn.functional.linear(position.to(pose_bias.dtype), w_position).unsqueeze(0) + pose_bias.unsqueeze(1)
    if low is not None:
        weights = tap_weights.to(pose_bias.dtype)
        for k in range(weights.shape[1]):
            z = z + low[:, taps[:, k]] * weights[:, k, None]
    return torch.sin(OMEGA_0 * z)


# -- kernels ------------------------------------------------------------------------------------------------
def _kernels():
    """Define the Triton kernels (once per mode, on first use). triton.jit decides at definition time
    whether a kernel is compiled or interpreted (TRITON_INTERPRET), hence one set per mode."""
    mode = interpreting()
    if mode in _KERNELS:
        return _KERNELS[mode]
    import triton
    import triton.language as tl

    @triton.jit
    def rounded_tf32(x, RNA: tl.constexpr):
        # float32 → TF32 rounded to nearest, as PyTorch's TF32 GEMMs do: tl.dot's "tf32" alone drops the 13 low
        # mantissa bits (truncation, always towards zero), which made the fused layers' TF32 error 2.6× PyTorch's
        # (session 10's gpu tests; triton-lang/triton issue 4574 names the cause and this instruction). RNA is
        # False under the interpreter, which has no PTX and multiplies in float32 anyway.
        if RNA:
            x = tl.inline_asm_elementwise("cvt.rna.tf32.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True,
                                          pack=1)
        return x

    globals()["rounded_tf32"] = rounded_tf32   # the same function in both modes (see first_layer_preactivation)

    @triton.jit
    def sine_linear_kernel(x_ptr, w_ptr, b_ptr, y_ptr, c_ptr, M, omega, N: tl.constexpr, K: tl.constexpr,
                           HAS_BIAS: tl.constexpr, SAVE_COS: tl.constexpr, DOT: tl.constexpr, RNA: tl.constexpr,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        # y[m, n] = sin(ω₀ (Σ_k x[m, k] w[n, k] + b[n])); x (M, K), w (N, K), y (M, N) row-major.
        # N and K are compile-time constants: a handful of widths, and the K loop unrolls.
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            kk = k0 + rk
            a = tl.load(x_ptr + rm[:, None] * K + kk[None, :], mask=(rm[:, None] < M) & (kk[None, :] < K), other=0.0)
            b = tl.load(w_ptr + rn[None, :] * K + kk[:, None], mask=(rn[None, :] < N) & (kk[:, None] < K), other=0.0)
            if DOT == 0:     # fp32 inputs, exact fp32 products
                acc += tl.dot(a, b, input_precision="ieee")
            elif DOT == 1:   # fp32 inputs, TF32 tensor cores
                acc += tl.dot(rounded_tf32(a, RNA), rounded_tf32(b, RNA), input_precision="tf32")
            elif DOT == 2:   # fp32 inputs rounded to bf16, fp32 accumulation
                acc += tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
            else:            # fp16 / bf16 inputs, fp32 accumulation
                acc += tl.dot(a, b)
        if HAS_BIAS:
            acc += tl.load(b_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        u = acc * omega
        mask = (rm[:, None] < M) & (rn[None, :] < N)
        offsets = rm[:, None] * N + rn[None, :]
        tl.store(y_ptr + offsets, tl.sin(u).to(y_ptr.dtype.element_ty), mask=mask)
        if SAVE_COS:
            tl.store(c_ptr + offsets, tl.cos(u) * omega, mask=mask)

    @triton.jit
    def first_layer_preactivation(pos_ptr, wpos_ptr, pb_ptr, low_ptr, taps_ptr, tw_ptr, n, rm, rc, mm, mc, mask,
                                  Mp, C, HAS_LOW: tl.constexpr):
        # z[m, c] = pos[m]·wpos[c] + pb[n, c] + Σ_k tw[m, k] low[n, taps[m, k], c], in fp32 (shared by the
        # training first layer and the whole-level inference kernel)
        px = tl.load(pos_ptr + rm * 2, mask=mm, other=0.0).to(tl.float32)
        py = tl.load(pos_ptr + rm * 2 + 1, mask=mm, other=0.0).to(tl.float32)
        wx = tl.load(wpos_ptr + rc * 2, mask=mc, other=0.0).to(tl.float32)
        wy = tl.load(wpos_ptr + rc * 2 + 1, mask=mc, other=0.0).to(tl.float32)
        z = px[:, None] * wx[None, :] + py[:, None] * wy[None, :]
        z += tl.load(pb_ptr + n * C + rc, mask=mc, other=0.0).to(tl.float32)[None, :]
        if HAS_LOW:
            for k in tl.static_range(4):
                t = tl.load(taps_ptr + rm * 4 + k, mask=mm, other=0).to(tl.int64)
                w = tl.load(tw_ptr + rm * 4 + k, mask=mm, other=0.0).to(tl.float32)
                v = tl.load(low_ptr + (n * Mp + t)[:, None] * C + rc[None, :], mask=mask, other=0.0)
                z += w[:, None] * v.to(tl.float32)
        return z

    # Triton resolves a kernel's calls through its module's globals, not this function's locals.
    globals()["first_layer_preactivation"] = first_layer_preactivation

    @triton.jit
    def first_layer_kernel(pos_ptr, wpos_ptr, pb_ptr, low_ptr, taps_ptr, tw_ptr, y_ptr, c_ptr,
                           M, Mp, C, omega, HAS_LOW: tl.constexpr, SAVE_COS: tl.constexpr,
                           BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
        # y[n, m, c] = sin(ω₀ (pos[m]·wpos[c] + pb[n, c] + Σ_k tw[m, k] low[n, taps[m, k], c]))
        pid_m = tl.program_id(0)
        pid_c = tl.program_id(1)
        n = tl.program_id(2).to(tl.int64)
        rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        rc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        mm = rm < M
        mc = rc < C
        mask = mm[:, None] & mc[None, :]
        z = first_layer_preactivation(pos_ptr, wpos_ptr, pb_ptr, low_ptr, taps_ptr, tw_ptr, n, rm, rc, mm, mc, mask,
                                      Mp, C, HAS_LOW)
        u = z * omega
        offsets = (n * M + rm)[:, None] * C + rc[None, :]
        tl.store(y_ptr + offsets, tl.sin(u).to(y_ptr.dtype.element_ty), mask=mask)
        if SAVE_COS:
            tl.store(c_ptr + offsets, tl.cos(u) * omega, mask=mask)

    @triton.jit
    def first_layer_backward_kernel(dy_ptr, c_ptr, pos_ptr, taps_ptr, tw_ptr, dlow_ptr, dpb_ptr, dwpos_ptr,
                                    M, Mp, C, HAS_LOW: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
        # g = dy · ω₀cos(ω₀ z); dpb[n] += Σ_m g; dwpos += Σ_{n,m} g ⊗ pos; dlow[n, taps[m, k]] += tw[m, k] g
        pid_m = tl.program_id(0)
        pid_c = tl.program_id(1)
        n = tl.program_id(2).to(tl.int64)
        rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        rc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        mm = rm < M
        mc = rc < C
        mask = mm[:, None] & mc[None, :]
        offsets = (n * M + rm)[:, None] * C + rc[None, :]
        g = (tl.load(dy_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
             * tl.load(c_ptr + offsets, mask=mask, other=0.0))
        tl.atomic_add(dpb_ptr + n * C + rc, tl.sum(g, axis=0), mask=mc)
        px = tl.load(pos_ptr + rm * 2, mask=mm, other=0.0).to(tl.float32)
        py = tl.load(pos_ptr + rm * 2 + 1, mask=mm, other=0.0).to(tl.float32)
        tl.atomic_add(dwpos_ptr + rc * 2, tl.sum(g * px[:, None], axis=0), mask=mc)
        tl.atomic_add(dwpos_ptr + rc * 2 + 1, tl.sum(g * py[:, None], axis=0), mask=mc)
        if HAS_LOW:
            for k in tl.static_range(4):
                t = tl.load(taps_ptr + rm * 4 + k, mask=mm, other=0).to(tl.int64)
                w = tl.load(tw_ptr + rm * 4 + k, mask=mm, other=0.0).to(tl.float32)
                tl.atomic_add(dlow_ptr + (n * Mp + t)[:, None] * C + rc[None, :], g * w[:, None], mask=mask)

    @triton.jit
    def sine_chain_kernel(pos_ptr, wpos_ptr, pb_ptr, low_ptr, taps_ptr, tw_ptr, w_ptr, b_ptr, p_ptr, pbias_ptr,
                          out_ptr, M, Mp, C, omega, HAS_LOW: tl.constexpr, LAYERS: tl.constexpr,
                          WIDTH: tl.constexpr, OUT: tl.constexpr, OUT_PAD: tl.constexpr, HAS_PBIAS: tl.constexpr,
                          DOT: tl.constexpr, RNA: tl.constexpr, BLOCK_M: tl.constexpr):
        # A whole level for BLOCK_M pixels of example n, activations kept on chip: the first layer as
        # first_layer_kernel, LAYERS sine layers h = sin(ω₀ (h W_l + b_l)) with W (LAYERS, WIDTH, WIDTH)
        # stored [l, k, n] zero-padded, then out = h P (+ p_bias), P (WIDTH, OUT_PAD) [k, o], no sine.
        pid_m = tl.program_id(0)
        n = tl.program_id(1).to(tl.int64)
        rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        rc = tl.arange(0, WIDTH)
        mm = rm < M
        mc = rc < C
        mask = mm[:, None] & mc[None, :]
        z = first_layer_preactivation(pos_ptr, wpos_ptr, pb_ptr, low_ptr, taps_ptr, tw_ptr, n, rm, rc, mm, mc, mask,
                                      Mp, C, HAS_LOW)
        h = tl.sin(z * omega)                    # padded channels: z = 0, h = 0
        for layer in tl.static_range(LAYERS):
            wl = tl.load(w_ptr + layer * WIDTH * WIDTH + rc[:, None] * WIDTH + rc[None, :])
            if DOT == 0:
                acc = tl.dot(h, wl, input_precision="ieee")
            elif DOT == 1:
                acc = tl.dot(rounded_tf32(h, RNA), rounded_tf32(wl, RNA), input_precision="tf32")
            else:
                acc = tl.dot(h.to(wl.dtype), wl)
            acc += tl.load(b_ptr + layer * WIDTH + rc)[None, :]
            h = tl.sin(acc * omega)
        ro = tl.arange(0, OUT_PAD)
        pw = tl.load(p_ptr + rc[:, None] * OUT_PAD + ro[None, :])
        if DOT == 0:
            o = tl.dot(h, pw, input_precision="ieee")
        elif DOT == 1:
            o = tl.dot(rounded_tf32(h, RNA), rounded_tf32(pw, RNA), input_precision="tf32")
        else:
            o = tl.dot(h.to(pw.dtype), pw)
        if HAS_PBIAS:
            o += tl.load(pbias_ptr + ro)[None, :]
        offsets = (n * M + rm)[:, None] * OUT + ro[None, :]
        tl.store(out_ptr + offsets, o.to(out_ptr.dtype.element_ty), mask=mm[:, None] & (ro[None, :] < OUT))

    _KERNELS[mode] = (triton, sine_linear_kernel, first_layer_kernel, first_layer_backward_kernel, sine_chain_kernel)
    return _KERNELS[mode]


@contextmanager
def matmul_precision(precision: str | None) -> Iterator[None]:
    """Inside the block, fused sine layers with fp32 inputs and precision=None multiply at `precision`
    ("tf32", "ieee", "bf16"; None: follow torch's TF32 switch), e.g. to try bf16 products in training.
    Restored when the block ends."""
    global _PRECISION
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} or None; got {precision!r}")
    saved, _PRECISION = _PRECISION, precision
    try:
        yield
    finally:
        _PRECISION = saved


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _dot_mode(dtype: torch.dtype, precision: str | None) -> int:
    """The DOT constexpr of sine_linear_kernel for input dtype and precision (None: TF32 when torch's
    CUDA matmul TF32 switch is on, as the PyTorch path would, else exact fp32)."""
    if dtype in (torch.float16, torch.bfloat16):
        return 3
    if precision is None:
        precision = _PRECISION
    if precision is None:
        precision = "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} or None; got {precision!r}")
    return DOT_MODES[precision]


def _launch_sine_linear(x2: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, save_cos: bool,
                        precision: str | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x2 (M, K) contiguous, weight (N, K) contiguous → y (M, N) in x2's dtype, and ω₀cos (M, N) fp32."""
    triton, kernel, _, _, _ = _kernels()
    m, k = x2.shape
    n = weight.shape[0]
    y = torch.empty(m, n, device=x2.device, dtype=x2.dtype)
    c = torch.empty(m, n, device=x2.device, dtype=torch.float32) if save_cos else y
    if m == 0:
        return y, (c if save_cos else None)
    block_n = min(128, max(16, _pow2(n)))
    block_k = 32 if k >= 32 else max(16, _pow2(k))
    block_m = 128 if block_n <= 64 else 64
    # sm_90 (ptxas -v, triton 3.6): with the cos epilogue, 4 warps spill ~1.7 KB per thread at these
    # tiles (precise sin and cos of 64 values each); 8 warps spill 60 bytes. Without it 4 warps do not spill.
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, block_n))
    kernel[grid](x2, weight, bias if bias is not None else y, y, c, m, OMEGA_0, N=n, K=k,
                 HAS_BIAS=bias is not None, SAVE_COS=save_cos, DOT=_dot_mode(x2.dtype, precision),
                 RNA=not interpreting(), BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=8 if save_cos else 4, num_stages=3)
    return y, (c if save_cos else None)


class _SineLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x2, weight, bias, precision):
        y, c = _launch_sine_linear(x2, weight, bias, True, precision)
        ctx.save_for_backward(x2, weight, c)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, dy):
        x2, weight, c = ctx.saved_tensors
        g = (dy.float() * c).to(x2.dtype)                      # dL/dz, z = x Wᵀ + b
        dx = g @ weight if ctx.needs_input_grad[0] else None
        dw = g.t() @ x2 if ctx.needs_input_grad[1] else None
        db = g.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dw, db, None


def sine_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                precision: str | None = None) -> torch.Tensor:
    """sin(ω₀ (x Wᵀ + b)) in one kernel: x (..., K), weight (N, K) (a 1×1 conv's weight flattened),
    bias (N,) or None → (..., N) in x's dtype. Differentiable in x, weight and bias.

    precision (fp32 inputs only): "tf32" (TF32 tensor cores), "ieee" (exact fp32 products), "bf16"
    (inputs rounded to bfloat16); None follows torch.backends.cuda.matmul.allow_tf32 like the
    PyTorch path. fp16/bf16 inputs multiply natively. Accumulation is fp32 in every case.
    """
    k = x.shape[-1]
    if x.dtype not in KERNEL_DTYPES:
        raise ValueError(f"sine_linear: x is {x.dtype}; the fused kernels take float32, float16 or bfloat16")
    if weight.dim() != 2 or weight.shape[1] != k:
        raise ValueError(f"sine_linear: weight must be (N, {k}) for x (..., {k}), got {tuple(weight.shape)}")
    x2 = x.reshape(-1, k).contiguous()
    weight = weight.to(x.dtype).contiguous()
    bias = None if bias is None else bias.contiguous()
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)):
        y = _SineLinear.apply(x2, weight, bias, precision)
    else:
        y, _ = _launch_sine_linear(x2, weight, bias, False, precision)
    return y.view(*x.shape[:-1], weight.shape[0])


def _launch_first_layer(position, w_position, pose_bias, low, taps, tap_weights, save_cos: bool, dtype):
    triton, _, kernel, _, _ = _kernels()
    n, c = pose_bias.shape
    m = position.shape[0]
    y = torch.empty(n, m, c, device=position.device, dtype=dtype)
    cos = torch.empty(n, m, c, device=position.device, dtype=torch.float32) if save_cos else y
    if m == 0 or n == 0:
        return y, (cos if save_cos else None)
    block_c = min(64, max(16, _pow2(c)))
    block_m = 64
    grid = (triton.cdiv(m, block_m), triton.cdiv(c, block_c), n)
    has_low = low is not None
    kernel[grid](position, w_position, pose_bias, low if has_low else y, taps if has_low else position,
                 tap_weights if has_low else position, y, cos, m, low.shape[1] if has_low else 0, c, OMEGA_0,
                 HAS_LOW=has_low, SAVE_COS=save_cos, BLOCK_M=block_m, BLOCK_C=block_c, num_warps=8)   # 4 spill on sm_90
    return y, (cos if save_cos else None)


class _SineFirstLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, position, w_position, pose_bias, low, taps, tap_weights):
        y, cos = _launch_first_layer(position, w_position, pose_bias, low, taps, tap_weights, True, pose_bias.dtype)
        ctx.save_for_backward(position, taps, tap_weights, cos)
        ctx.low_shape = None if low is None else low.shape
        ctx.dtypes = (w_position.dtype, pose_bias.dtype, None if low is None else low.dtype)
        return y

    @staticmethod
    def backward(ctx, dy):
        position, taps, tap_weights, cos = ctx.saved_tensors
        triton, _, _, kernel, _ = _kernels()
        n, m, c = cos.shape
        dev = cos.device
        has_low = ctx.low_shape is not None
        dlow = torch.zeros(ctx.low_shape, device=dev, dtype=torch.float32) if has_low else None
        dpb = torch.zeros(n, c, device=dev, dtype=torch.float32)
        dwpos = torch.zeros(c, 2, device=dev, dtype=torch.float32)
        if m and n:
            block_c = min(64, max(16, _pow2(c)))
            block_m = 64
            grid = (triton.cdiv(m, block_m), triton.cdiv(c, block_c), n)
            kernel[grid](dy.contiguous(), cos, position, taps if has_low else position,
                         tap_weights if has_low else position, dlow if has_low else dpb, dpb, dwpos,
                         m, ctx.low_shape[1] if has_low else 0, c, HAS_LOW=has_low,
                         BLOCK_M=block_m, BLOCK_C=block_c, num_warps=8)
        wdt, pdt, ldt = ctx.dtypes
        return (None, dwpos.to(wdt), dpb.to(pdt), None if dlow is None else dlow.to(ldt), None, None)


def sine_first_layer(position: torch.Tensor, w_position: torch.Tensor, pose_bias: torch.Tensor,
                     low: torch.Tensor | None = None, taps: torch.Tensor | None = None,
                     tap_weights: torch.Tensor | None = None, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """The first sine layer of a level, fused: → (N, M, C) in out_dtype (default pose_bias's dtype).

    position (M, 2) pixel centres; w_position (C, 2) the layer's weights on (x, y); pose_bias (N, C) =
    the pose term plus the bias (a per-example bias, computed by the caller so its gradient reaches
    the pose weights through autograd); low (N, M_prev, C) the previous level's features projected by
    this layer's feature weights, read through taps (M, 4) int64 rows of low and tap_weights (M, 4)
    (kyara.student.pixels.PixelLevel), or None at the coarsest level / a single-level network.
    Differentiable in w_position, pose_bias and low (then out_dtype must be pose_bias's dtype). For fp16
    inference pass pose_bias (and low) in float32 with out_dtype=float16: the sine's argument, ω₀ = 30
    times them, then carries no fp16 rounding of its terms.
    """
    n, c = pose_bias.shape
    out_dtype = out_dtype or pose_bias.dtype
    if position.dim() != 2 or position.shape[1] != 2:
        raise ValueError(f"sine_first_layer: position must be (M, 2), got {tuple(position.shape)}")
    if w_position.shape != (c, 2):
        raise ValueError(f"sine_first_layer: w_position must be ({c}, 2), got {tuple(w_position.shape)}")
    m = position.shape[0]
    if low is not None:
        if low.dim() != 3 or low.shape[0] != n or low.shape[2] != c:
            raise ValueError(f"sine_first_layer: low must be ({n}, M_prev, {c}), got {tuple(low.shape)}")
        if taps is None or tap_weights is None or taps.shape != (m, 4) or tap_weights.shape != (m, 4):
            raise ValueError(f"sine_first_layer: taps and tap_weights must be ({m}, 4) with low")
        low = low.contiguous()
        taps = taps.contiguous()
        tap_weights = tap_weights.contiguous()
    position = position.contiguous()
    w_position = w_position.contiguous()
    pose_bias = pose_bias.contiguous()
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (w_position, pose_bias, low))
    if needs_grad:
        if out_dtype != pose_bias.dtype:
            raise ValueError("sine_first_layer: with autograd out_dtype must be pose_bias's dtype")
        return _SineFirstLayer.apply(position, w_position, pose_bias, low, taps, tap_weights)
    return _launch_first_layer(position, w_position, pose_bias, low, taps, tap_weights, False, out_dtype)[0]


# -- inference: a whole level in one kernel ------------------------------------------------------------------
CHAIN_MAX_WIDTH = 128   # widest level (padded to a power of two) run as one kernel: weights and activations on chip
_CHAINS_ON = True       # chains(False) turns them off (benchmarks: per-layer kernels instead)
_CHAIN_DISABLED: str | None = None   # why chains stopped being used in this process (a failed launch)


@contextmanager
def chains(enabled: bool) -> Iterator[None]:
    """Inside the block, ``chain_fits`` says no when enabled is False: levels run layer by layer."""
    global _CHAINS_ON
    saved, _CHAINS_ON = _CHAINS_ON, enabled
    try:
        yield
    finally:
        _CHAINS_ON = saved


@dataclass(frozen=True)
class SineChain:
    """The layers of a level after its first, zero-padded to width `width` for ``sine_chain``.

    hidden_weight: (L, width, width) [layer, in, out] in the compute dtype; hidden_bias: (L, width)
    float32; projection: (width, out_pad) [in, out] (the head, or the next level's feature weights);
    projection_bias: (out_pad,) float32 or None; out: the real number of outputs (≤ out_pad).
    """
    hidden_weight: torch.Tensor
    hidden_bias: torch.Tensor
    projection: torch.Tensor
    projection_bias: torch.Tensor | None
    width: int
    out: int


def chain_fits(first_width: int, hidden: list[tuple[torch.Tensor, torch.Tensor]]) -> bool:
    """Whether a level of these widths runs as one kernel (every width ≤ CHAIN_MAX_WIDTH), and chains
    are on (``chains``) and have not failed in this process."""
    widths = [first_width] + [int(w.shape[0]) for w, _ in hidden]
    return _CHAINS_ON and _CHAIN_DISABLED is None and _pow2(max(widths)) <= CHAIN_MAX_WIDTH


def make_chain(hidden: list[tuple[torch.Tensor, torch.Tensor]], projection: torch.Tensor,
               projection_bias: torch.Tensor | None, first_width: int, dtype: torch.dtype) -> SineChain:
    """hidden: [(weight (N, K), bias (N,))] of the level's sine layers after the first; projection
    (O, K) weight (and bias) of what follows them, all as in nn.Linear → a padded SineChain."""
    widths = [first_width] + [int(w.shape[0]) for w, _ in hidden]
    width = max(16, _pow2(max(widths)))
    out = int(projection.shape[0])
    out_pad = max(16, _pow2(out))
    dev = projection.device
    w = torch.zeros(max(1, len(hidden)), width, width, device=dev, dtype=dtype)
    b = torch.zeros(max(1, len(hidden)), width, device=dev, dtype=torch.float32)
    for i, (weight, bias) in enumerate(hidden):
        w[i, :weight.shape[1], :weight.shape[0]] = weight.detach().t().to(dtype)
        b[i, :bias.shape[0]] = bias.detach().float()
    p = torch.zeros(width, out_pad, device=dev, dtype=dtype)
    p[:projection.shape[1], :out] = projection.detach().t().to(dtype)
    pb = None
    if projection_bias is not None:
        pb = torch.zeros(out_pad, device=dev, dtype=torch.float32)
        pb[:out] = projection_bias.detach().float()
    return SineChain(w, b, p, pb, width, out)


def sine_chain(position: torch.Tensor, w_position: torch.Tensor, pose_bias: torch.Tensor, low: torch.Tensor | None,
               taps: torch.Tensor | None, tap_weights: torch.Tensor | None, chain: SineChain,
               layers: int, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """A level in one kernel, no autograd (inference): sine_first_layer's inputs, then `layers` sine layers
    and the projection of `chain` → (N, M, chain.out) in out_dtype (default pose_bias's dtype). With an
    fp16 chain the products are fp16 with fp32 accumulation, activations fp16 between layers; an fp32
    chain follows ``sine_linear``'s precision rule."""
    triton, _, _, _, kernel = _kernels()
    n, c = pose_bias.shape
    m = position.shape[0]
    out = torch.empty(n, m, chain.out, device=position.device, dtype=out_dtype or pose_bias.dtype)
    if m == 0 or n == 0:
        return out
    has_low = low is not None
    dot = _dot_mode(chain.hidden_weight.dtype, None)
    # sm_90 (ptxas -v): the 4-tap gather needs 32 rows per program to stay in registers at 8 warps
    block_m = 32 if has_low else 64
    grid = (triton.cdiv(m, block_m), n)
    kernel[grid](position.contiguous(), w_position.contiguous(), pose_bias.contiguous(),
                 low.contiguous() if has_low else out, taps.contiguous() if has_low else position,
                 tap_weights.contiguous() if has_low else position, chain.hidden_weight, chain.hidden_bias,
                 chain.projection, chain.projection_bias if chain.projection_bias is not None else chain.hidden_bias,
                 out, m, low.shape[1] if has_low else 0, c, OMEGA_0, HAS_LOW=has_low, LAYERS=layers,
                 WIDTH=chain.width, OUT=chain.out, OUT_PAD=chain.projection.shape[1],
                 HAS_PBIAS=chain.projection_bias is not None, DOT=dot if dot < 2 else 3, RNA=not interpreting(),
                 BLOCK_M=block_m, num_warps=8)
    return out


def disable_chains(reason: str) -> None:
    """Stop using sine_chain in this process (after a failed launch); levels then run layer by layer."""
    global _CHAIN_DISABLED
    if _CHAIN_DISABLED is None:
        warnings.warn(f"fused SIREN level kernels disabled, running layer by layer: {reason}", RuntimeWarning,
                      stacklevel=2)
    _CHAIN_DISABLED = reason
