"""kyara.nn.fused_siren: the fused Triton sine layers against the PyTorch path they replace.

Three groups:
- CPU, always: the switch (``use_triton``, DistillConfig.kernels, TrainForward, Student.kernels)
  keeps the PyTorch path on the CPU, which stays exactly what it was; bad inputs give clear errors;
  "auto" falls back when a fused call fails.
- Triton's interpreter (TRITON_INTERPRET=1, CPU tensors; skipped when the triton package is not
  importable, it ships with CUDA builds of torch only): the kernels' maths, forward and gradients,
  on small shapes that exercise every mask (widths not multiples of the blocks).
- ``gpu`` (skipped without CUDA): the compiled kernels on the GPU, at the student's real sizes, against
  a float64 evaluation, with tolerances stated as "no worse than the PyTorch path at the same precision".
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kyara.distill.config import DistillConfig
from kyara.distill.step import TrainForward
from kyara.nn import fused_siren
from kyara.nn.siren import OMEGA_0
from kyara.student import BodyMorpher, FaceMorpher, Student
from kyara.student.pixels import PixelSet

needs_triton = pytest.mark.skipif(not fused_siren.triton_importable(),
                                  reason="the triton package is not importable (it ships with CUDA builds of torch)")


def on_gpu(test):
    """@pytest.mark.gpu, skipped without CUDA or triton."""
    for mark in (pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
                 needs_triton):
        test = mark(test)
    return test


@pytest.fixture
def interpreter(monkeypatch):
    """Triton's CPU interpreter on for the test (kernels defined while it is on run interpreted)."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    yield


@pytest.fixture
def fresh_auto(monkeypatch):
    """'auto' as at process start (a test may switch it off)."""
    monkeypatch.setattr(fused_siren, "_AUTO_DISABLED", None)
    yield


def tiny_body() -> BodyMorpher:
    """Three levels like the real body morpher (8/16/32 px) with narrow, non-power-of-two widths."""
    torch.manual_seed(0)
    return BodyMorpher(levels=((8, 24, 12), (16, 12, 10), (32, 10, 10)))


def tiny_face() -> FaceMorpher:
    torch.manual_seed(1)
    return FaceMorpher(hidden=20, num_layers=3, size=8)


def region_pixels(size: int = 32, levels: int = 3) -> PixelSet:
    mask = np.zeros((size, size), dtype=bool)
    mask[5:21, 3:30] = True
    mask[24:27, 10:12] = True
    return PixelSet.from_mask(mask, levels)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


# -- the switch: the PyTorch path on the CPU, unchanged ------------------------------------------------------
def test_auto_keeps_the_pytorch_path_on_the_cpu_even_under_the_interpreter(monkeypatch, fresh_auto):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert fused_siren.use_triton("auto", "cpu") is False
    assert fused_siren.use_triton("torch", "cpu") is False
    student = Student()
    forward = TrainForward(student, compile=False, kernels="auto")
    assert forward.kernels == "torch"
    # the very functions the loop ran before the switch existed
    assert forward.face == student.face_morpher.forward
    assert forward._features == student.body_morpher.features
    assert forward._features_at == student.body_morpher.features_at


def test_switch_values_are_checked_with_clear_errors(monkeypatch):
    with pytest.raises(ValueError, match=r"kernels must be one of auto, triton, torch; got 'cuda'"):
        fused_siren.use_triton("cuda", "cpu")
    with pytest.raises(ValueError, match=r"DistillConfig.kernels must be auto, triton or torch; got 'fast'"):
        DistillConfig(kernels="fast")
    assert DistillConfig().kernels == "torch"   # until the kernels are measured on a GPU
    assert DistillConfig.from_json(DistillConfig(kernels="torch").to_json()).kernels == "torch"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match=r"kernels='triton' cannot run on cpu"):
        fused_siren.use_triton("triton", "cpu")
    with pytest.raises(RuntimeError, match=r"kernels='triton' cannot run on cpu"):
        TrainForward(Student(), kernels="triton")


def test_student_on_the_cpu_renders_exactly_as_before():
    """Student.kernels = 'auto' must not change a CPU result by one bit: with autograd the modules'
    torch code, without it the CPU evaluator (the default is 'torch' until the kernels run on a GPU)."""
    student = Student(body_morpher=tiny_body(), face_morpher=FaceMorpher())
    assert Student.kernels == "torch"
    student.kernels = "auto"
    torch.manual_seed(2)
    poses = torch.rand(2, 45) * 2 - 1
    pixels = PixelSet.full(32, 3)
    with torch.enable_grad():
        assert torch.equal(student.body_features(poses, pixels), student.body_morpher.features_at(poses, pixels))
        assert torch.equal(student.face_rgba(poses[:, 6:]), student.face_morpher(poses[:, 6:]))
    from kyara.student.inference import evaluate_poses, prepare_body
    with torch.no_grad():
        assert torch.equal(student.body_features(poses, pixels),
                           evaluate_poses(prepare_body(student.body_morpher), poses, pixels))


def test_bad_shapes_name_the_parameter():
    x = torch.zeros(3, 5)
    with pytest.raises(ValueError, match=r"sine_linear: weight must be \(N, 5\) for x \(\.\.\., 5\), got \(4, 6\)"):
        fused_siren.sine_linear(x, torch.zeros(4, 6))
    with pytest.raises(ValueError, match=r"position must be \(M, 2\)"):
        fused_siren.sine_first_layer(torch.zeros(7, 3), torch.zeros(4, 2), torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"w_position must be \(4, 2\)"):
        fused_siren.sine_first_layer(torch.zeros(7, 2), torch.zeros(5, 2), torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"taps and tap_weights must be \(7, 4\)"):
        fused_siren.sine_first_layer(torch.zeros(7, 2), torch.zeros(4, 2), torch.zeros(1, 4), torch.zeros(1, 3, 4))
    with pytest.raises(ValueError, match=r"precision must be one of tf32, ieee, bf16"):
        fused_siren._dot_mode(torch.float32, "fp8")
    with pytest.raises(ValueError, match=r"sine_linear: x is torch.float64; the fused kernels take float32"):
        fused_siren.sine_linear(torch.zeros(3, 5, dtype=torch.float64), torch.zeros(4, 5, dtype=torch.float64))


def test_precision_names_pick_their_kernel_branch():
    """The kernels branch on DOT: 0 exact fp32 products, 1 TF32, 2 bf16, 3 fp16/bf16 inputs. A wrong table
    here ran "ieee" as TF32 on the H200 (session 9: 3.5e-3 from float64 where PyTorch's fp32 is 2.4e-6);
    the interpreter cannot see it (its every fp32 dot is exact), so the table is checked directly."""
    assert [fused_siren._dot_mode(torch.float32, p) for p in ("ieee", "tf32", "bf16")] == [0, 1, 2]
    assert fused_siren._dot_mode(torch.float16, "ieee") == fused_siren._dot_mode(torch.bfloat16, None) == 3
    saved = torch.backends.cuda.matmul.allow_tf32   # (not monkeypatch: a property of torch's cuBLAS module)
    try:
        for tf32, mode in ((False, 0), (True, 1)):   # None follows torch's TF32 switch, like the PyTorch path
            torch.backends.cuda.matmul.allow_tf32 = tf32
            assert fused_siren._dot_mode(torch.float32, None) == mode
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def test_auto_falls_back_once_when_a_fused_call_fails(monkeypatch, fresh_auto):
    # as on a CUDA GPU where the kernels import but (say) do not compile
    monkeypatch.setattr(fused_siren, "use_triton",
                        lambda kernels, device: kernels == "triton" or fused_siren._AUTO_DISABLED is None)

    def broken(x):
        raise RuntimeError("PTX compile failed\nlong details")

    x = torch.arange(3.0)
    with pytest.warns(RuntimeWarning, match="fused SIREN kernels disabled, using the PyTorch path: RuntimeError: PTX compile failed"):
        assert torch.equal(fused_siren.with_fallback("auto", broken, torch.sin, x), torch.sin(x))
    assert fused_siren._AUTO_DISABLED.startswith("RuntimeError: PTX compile failed")
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no second warning: auto is off for the process now
        assert torch.equal(fused_siren.with_fallback("auto", broken, torch.cos, x), torch.cos(x))
    with pytest.raises(RuntimeError, match="PTX compile failed"):
        fused_siren.with_fallback("triton", broken, torch.sin, x)


# -- the kernels' maths, in Triton's interpreter ---------------------------------------------------------------
# Tolerances: the interpreter computes each kernel's products with numpy in float32 (TF32 does not
# apply), so the fused layers differ from torch only by float32 summation order. Measured: one layer
# ≤ 7e-7 absolute (the ω₀ = 30 factor turns ~2e-8 differences of z into ~6e-7 of sin), gradients
# ≤ 3.3e-7 relative to their largest element, fp16 inputs ≤ 1e-3 (inputs rounded to fp16); the tiny
# three-level body ≤ 1.7e-6 forward and ≤ 1.2e-6 relative in its gradients. Bounds: 1e-5 per layer,
# 2e-5 for whole networks, 5e-3 for fp16 inputs (~5–15× the measurements).
@needs_triton
@pytest.mark.parametrize("shape", [(67, 90, 90), (5, 37, 180), (130, 16, 24)])
def test_sine_linear_forward_and_gradients(interpreter, shape):
    m, k, n = shape
    g = torch.Generator().manual_seed(m)
    x = (torch.rand(m, k, generator=g) * 2 - 1).requires_grad_()
    w = ((torch.rand(n, k, generator=g) * 2 - 1) * (6 / k) ** 0.5 / OMEGA_0).requires_grad_()
    b = ((torch.rand(n, generator=g) * 2 - 1) * 0.05).requires_grad_()
    y = fused_siren.sine_linear(x, w, b, precision="ieee")
    ref = torch.sin(OMEGA_0 * F.linear(x, w, b))
    assert y.shape == (m, n) and y.dtype == torch.float32
    assert (y - ref).abs().max() < 1e-5
    dy = torch.randn(m, n, generator=g)
    for got, want in zip(torch.autograd.grad(y, (x, w, b), dy), torch.autograd.grad(ref, (x, w, b), dy)):
        assert rel(got, want) < 1e-5
    with torch.no_grad():                                           # the inference launch: no cos saved
        assert (fused_siren.sine_linear(x, w, b, precision="tf32") - ref).abs().max() < 1e-5
        y16 = fused_siren.sine_linear(x.half(), w.half(), b.half())
        assert y16.dtype == torch.float16 and (y16.float() - ref).abs().max() < 5e-3
    # batched leading dimensions and no bias
    x3 = x.detach().reshape(1, m, k)
    assert torch.allclose(fused_siren.sine_linear(x3, w.detach(), precision="ieee")[0],
                          torch.sin(OMEGA_0 * F.linear(x3[0], w.detach())), atol=1e-5)


@needs_triton
@pytest.mark.parametrize("with_low", [False, True])
def test_sine_first_layer_forward_and_gradients(interpreter, with_low):
    g = torch.Generator().manual_seed(3)
    n, m, mp, c = 3, 77, 21, 40
    position = torch.rand(m, 2, generator=g) * 2 - 1
    w_pos = (torch.randn(c, 2, generator=g) * 0.5).requires_grad_()
    pose_bias = (torch.randn(n, c, generator=g) * 0.1).requires_grad_()
    low = taps = tw = None
    if with_low:
        low = (torch.randn(n, mp, c, generator=g) * 0.1).requires_grad_()
        taps = torch.randint(0, mp, (m, 4), generator=g)
        tw = torch.rand(m, 4, generator=g)
    y = fused_siren.sine_first_layer(position, w_pos, pose_bias, low, taps, tw)
    ref = fused_siren.first_layer_reference(position, w_pos, pose_bias, low, taps, tw)
    assert y.shape == (n, m, c)
    assert (y - ref).abs().max() < 1e-5
    inputs = [w_pos, pose_bias] + ([low] if with_low else [])
    dy = torch.randn(n, m, c, generator=g)
    for got, want in zip(torch.autograd.grad(y, inputs, dy), torch.autograd.grad(ref, inputs, dy)):
        assert rel(got, want) < 1e-5


@needs_triton
def test_body_and_face_through_the_fused_kernels_equal_the_torch_path(interpreter):
    body, face = tiny_body(), tiny_face()
    g = torch.Generator().manual_seed(4)
    pose = torch.rand(2, 45, generator=g) * 2 - 1
    pixels = region_pixels()
    for fused, reference in ((body.fused_features_at(pose, pixels), body.features_at(pose, pixels)),
                             (body.fused_features(pose), body.features(pose))):
        assert fused.shape == reference.shape
        assert (fused - reference).abs().max() < 2e-5
        dy = torch.randn(reference.shape, generator=g)
        params = list(body.parameters())
        for got, want in zip(torch.autograd.grad(fused, params, dy), torch.autograd.grad(reference, params, dy)):
            assert rel(got, want) < 2e-5
    face_pose = torch.rand(3, 39, generator=g)
    fused, reference = face.fused_forward(face_pose), face(face_pose)
    assert fused.shape == reference.shape == (3, 4, 8, 8)
    assert (fused - reference).abs().max() < 2e-5
    params = list(face.parameters())
    dy = torch.randn(reference.shape, generator=g)
    for got, want in zip(torch.autograd.grad(fused, params, dy), torch.autograd.grad(reference, params, dy)):
        assert rel(got, want) < 2e-5


@needs_triton
def test_inference_runs_whole_levels_in_one_kernel_with_the_same_result(interpreter, monkeypatch):
    """Without autograd, levels whose widths fit CHAIN_MAX_WIDTH (here all three, and the face) run as one
    sine_chain kernel each; they equal the layer-by-layer kernels and the torch path (fp32 bound as in
    the tests above; measured 1.3e-6). fp16: weights, inputs and activations rounded to fp16, measured
    3.3e-3 from fp32 torch on outputs of magnitude ≤ 1.4, while torch's own fp16 path is 1.2e-2 off (it
    rounds z to fp16 before the ×30): the fused fp16 level must stay below 1e-2 and below torch fp16."""
    monkeypatch.setattr(fused_siren, "_CHAIN_DISABLED", None)
    body, face = tiny_body(), tiny_face()
    g = torch.Generator().manual_seed(6)
    pose = torch.rand(2, 45, generator=g) * 2 - 1
    face_pose = torch.rand(3, 39, generator=g)
    pixels = region_pixels()
    calls = []
    real_chain = fused_siren.sine_chain
    monkeypatch.setattr(fused_siren, "sine_chain", lambda *a, **k: calls.append(a[-1]) or real_chain(*a, **k))
    with torch.no_grad():
        reference, face_reference = body.features_at(pose, pixels), face(face_pose)
        chained, face_chained = body.fused_features_at(pose, pixels), face.fused_forward(face_pose)
        assert calls == [2, 2, 2, 2]          # three body levels and the face, each with its 2 hidden layers
        with fused_siren.chains(False):
            layered, face_layered = body.fused_features_at(pose, pixels), face.fused_forward(face_pose)
        assert len(calls) == 4
        body16 = tiny_body().half()
        chained16 = body16.fused_features_at(pose.half(), pixels)
        torch16 = body16.features_at(pose.half(), pixels)
    assert fused_siren._CHAIN_DISABLED is None
    for got in (chained, layered):
        assert (got - reference).abs().max() < 2e-5
    for got in (face_chained, face_layered):
        assert (got - face_reference).abs().max() < 2e-5
    error16 = (chained16.float() - reference).abs().max()
    assert chained16.dtype == torch.float16 and error16 < 1e-2
    assert error16 < (torch16.float() - reference).abs().max()


@needs_triton
def test_student_and_train_forward_select_the_kernels_when_asked(interpreter, fresh_auto):
    student = Student(body_morpher=tiny_body(), face_morpher=tiny_face())
    student.set_region(torch.from_numpy(np.pad(np.ones((20, 24), bool), ((4, 8), (6, 2)))))
    g = torch.Generator().manual_seed(5)
    poses = torch.rand(2, 45, generator=g) * 2 - 1
    image = torch.rand(4, 32, 32, generator=g) * 2 - 1
    with torch.enable_grad():
        reference = student.body_features(poses)
        student.kernels = "triton"
        fused = student.body_features(poses)
    assert (fused - reference).abs().max() < 2e-5
    forward = TrainForward(student, compile=False, kernels="triton")
    assert forward.kernels == "triton"
    body_input = image.expand(2, -1, -1, -1)
    assert (forward.body(body_input, poses).image - student.body_outputs(body_input, poses).image).abs().max() < 2e-5
    assert fused_siren.probe("cpu") is None


# -- on the GPU ---------------------------------------------------------------------------------------------
def _torch_sine_linear(x, w, b):
    return torch.sin(OMEGA_0 * F.linear(x, w, b))


def _error_vs_float64(fn, x, w, b) -> float:
    """max |fn(x, w, b) − the PyTorch maths in float64|: fn's rounding error at the tensors' precision."""
    with torch.no_grad():
        return float((fn(x, w, b).double() - _torch_sine_linear(x.double(), w.double(), b.double())).abs().max())


@on_gpu
@pytest.mark.parametrize("tf32", [False, True])
@pytest.mark.parametrize("k,n", [(360, 360), (360, 180), (180, 90), (90, 90), (128, 128)])
def test_gpu_sine_linear_is_as_accurate_as_the_pytorch_path(k, n, tf32, monkeypatch):
    """Every sine layer shape of the student, 20,001 rows. Against float64: the fused layer's error
    must be within 2× the PyTorch path's at the same matmul precision (+1e-6 absolute, a few ulps of
    the sine): both round the same products (TF32: the same 10-bit inputs) and differ only in summation
    order and rounding mode, which moves the maximum error by tens of percent, not by 2×. Gradients
    (x, W, b) likewise against float64."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", tf32)
    g = torch.Generator().manual_seed(k + n)
    x = (torch.rand(20_001, k, generator=g) * 2 - 1).cuda()
    w = ((torch.rand(n, k, generator=g) * 2 - 1) * (6 / k) ** 0.5 / OMEGA_0).cuda()
    b = ((torch.rand(n, generator=g) * 2 - 1) * 0.05).cuda()
    fused_err = _error_vs_float64(fused_siren.sine_linear, x, w, b)
    torch_err = _error_vs_float64(_torch_sine_linear, x, w, b)
    assert fused_err <= 2 * torch_err + 1e-6, (fused_err, torch_err)
    dy = torch.randn(20_001, n, generator=g).cuda()
    grads = {}
    for name, fn, dtype in (("fused", lambda *a: fused_siren.sine_linear(*a), torch.float32),
                            ("torch", _torch_sine_linear, torch.float32),
                            ("exact", _torch_sine_linear, torch.float64)):
        inputs = [t.to(dtype).requires_grad_() for t in (x, w, b)]
        grads[name] = torch.autograd.grad(fn(*inputs), inputs, dy.to(dtype))
    for fused_g, torch_g, exact_g in zip(grads["fused"], grads["torch"], grads["exact"]):
        fused_e = float((fused_g.double() - exact_g).abs().max())
        torch_e = float((torch_g.double() - exact_g).abs().max())
        assert fused_e <= 2 * torch_e + 1e-6 * float(exact_g.abs().max()), (fused_e, torch_e)


@on_gpu
def test_gpu_training_step_matches_the_pytorch_path(monkeypatch):
    """The real student on a region, one training forward and backward, TF32 off: the fused path's
    output and gradients against float64 within 2× the PyTorch path's error (+1e-5 of the largest
    value): both round the same fp32 operations, in another order (atomics in the scatter-add)."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch.manual_seed(0)
    student = Student().cuda()
    mask = np.zeros((512, 512), dtype=bool)
    mask[100:400, 150:380] = True
    poses = (torch.rand(4, 45) * 2 - 1).cuda()

    def run(kernels: str, dtype):
        s = Student().cuda().to(dtype)
        s.load_state_dict(student.state_dict())
        s.set_region(torch.from_numpy(mask))
        fn = s.body_morpher.fused_features_at if kernels == "triton" else s.body_morpher.features_at
        out = fn(poses.to(dtype), s.body_pixels())
        dy = torch.ones_like(out)
        grads = torch.autograd.grad(out, list(s.body_morpher.parameters()), dy)
        return out.double(), [t.double() for t in grads]

    exact_out, exact_g = run("torch", torch.float64)
    torch_out, torch_g = run("torch", torch.float32)
    fused_out, fused_g = run("triton", torch.float32)
    torch_e, fused_e = float((torch_out - exact_out).abs().max()), float((fused_out - exact_out).abs().max())
    assert fused_e <= 2 * torch_e + 1e-5, (fused_e, torch_e)
    for f, t, e in zip(fused_g, torch_g, exact_g):
        scale = float(e.abs().max())
        assert float((f - e).abs().max()) <= 2 * float((t - e).abs().max()) + 1e-5 * scale


@on_gpu
def test_gpu_fp16_inference_of_the_bundled_student_is_45_db_from_fp32_and_graph_capturable():
    """Issue 16's bar for the fast path: fp16 output ≥ 45 dB (PSNR, model space) from the fp32 PyTorch
    output; a CUDA graph of Student.pose with the fused kernels replays the eager result exactly."""
    import copy

    from kyara.character import SAMPLE_CHARACTER, load_character
    from kyara.eval.metrics import psnr
    from kyara.pose_sampler import sample_poses

    ch = load_character(SAMPLE_CHARACTER, device="cuda")
    reference_student = ch.poser
    reference_student.kernels = "torch"
    poses = sample_poses(8, torch.Generator().manual_seed(0)).cuda()
    image = ch.image.cuda()
    ref = reference_student.pose(image, poses).float()
    student = copy.deepcopy(reference_student).half()
    student.kernels = "triton"
    img16, p16 = image.half(), poses.half()
    eager = student.pose(img16, p16)
    per_pose = psnr(eager.float(), ref)
    print(f"fp16 fused vs fp32 torch, 8 poses: min {float(per_pose.min()):.2f} dB, max {float(per_pose.max()):.2f} dB")
    assert float(per_pose.min()) >= 45.0
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        student.pose(img16, p16)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = student.pose(img16, p16)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, eager)
