"""One training step of both student networks, as distill() runs it and benchmarks/distill_step.py times it.

A step draws examples from the teacher pool (kyara.distill.pool.TeacherPool), trains the face morpher on
the teacher's face box and the body morpher on the teacher's final image (optionally on one random part of
their pixels: PixelParts), and updates both. The pieces: TrainForward (the student's forward passes,
torch.compile'd on CUDA), StepPrecision (fp32/TF32, or fp16 autocast with loss scaling), the losses on pixel
parts, PassGraphs (CUDA graphs of a network's pass, config.cuda_graphs), and TrainStep, which puts them
together. Nothing here reads a value back from the GPU: a step only queues work, so the CPU can run ahead of
the GPU (see TrainStep).
"""
from __future__ import annotations

import contextlib
import functools
import warnings
from dataclasses import dataclass

import torch

from kyara.distill.config import DistillConfig, Phase
from kyara.distill.losses import alpha_edges, body_loss, face_loss, flow_weight, line_detail
from kyara.distill.muon import MuonWithAdam
from kyara.distill.parallel import Ranks
from kyara.distill.parts import PixelParts
from kyara.geometry import FACE_MORPHER_BOX, STUDENT_FACE_BOX
from kyara.nn import fused_siren
from kyara.nn.warp import apply_flow, apply_flow_at
from kyara.student import BodyMorpherOutput, Student
from kyara.student.pixels import PixelSet


def subset_body_loss(forward: "TrainForward", body_input: torch.Tensor, poses: torch.Tensor, final: torch.Tensor,
                     flow: torch.Tensor, pixels: PixelSet, share: float, phase, config: DistillConfig):
    """body_loss on the pixels of one PixelParts part of the region: the student and the targets there only.
    body_input, final (N, 4, 512, 512), flow (N, 2, 512, 512) the teacher's; poses (N, 45)."""
    at = pixels.output.index

    def gather(t: torch.Tensor) -> torch.Tensor:     # (N, C, H, W) → (N, C, M)
        return t.flatten(2).index_select(2, at)

    flow_at = gather(flow)
    with torch.no_grad():
        target_warped = apply_flow_at(body_input, flow_at, at)
        flow_w = gather(flow_weight(final)) if config.masked_flow else None       # need the neighbourhood: whole image
        edges = gather(alpha_edges(final)) if config.edge_weight else None
        lines = gather(line_detail(final)) if config.flow_line_weight else None
    out = forward.body_at(body_input, poses, pixels)
    return body_loss(out, gather(final), target_warped, flow_at, phase, config.masked_flow, config.blended_l2,
                     config.edge_weight, flow_w=flow_w, edges=edges, pixel_share=share, warped_l2=config.warped_l2,
                     flow_line_weight=config.flow_line_weight, lines=lines)


def subset_face_loss(forward: "TrainForward", face_poses: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                     pixels: PixelSet, share: float, config: DistillConfig) -> torch.Tensor:
    """face_loss on the pixels of one PixelParts part of the face box, × its share (≈ 1: the face box is
    split into equal parts), an unbiased estimate of the loss on the whole box. face_poses (N, 39);
    target (N, 4, 128, 128); mask (1, 1, 128, 128)."""
    at = pixels.output.index
    pred = forward.face_at(face_poses, at)                                                 # (N, 4, M)
    return share * face_loss(pred, target.flatten(2).index_select(2, at), mask.flatten(2).index_select(2, at),
                             config.face_mask_weight)


class TrainForward:
    """The student's forward passes as the training loop runs them, torch.compile'd when asked.

    The SIREN steps are dominated by elementwise work (sines, bilinear taps) that compilation fuses:
    ~1.7× faster training steps on an H100 with the same maths (benchmarks/distill_profile.py).
    Only training goes through here; evaluation calls the plain modules, so the compiled graphs
    keep one shape and always have autograd on (no recompilation).

    With kernels selecting Triton (kyara.nn.fused_siren.use_triton) the sine layers run as fused
    kernels (``FaceMorpher.fused_forward``, ``BodyMorpher.fused_features[_at]``), which do the fusing
    that compilation would: under "auto" they are used uncompiled, and only after ``fused_siren.probe``
    agreed with the PyTorch maths on this device (else the torch path, compiled as asked); an explicit
    "triton" with compile=True compiles around them. ``self.kernels`` is what was chosen: "triton" / "torch".
    """

    def __init__(self, student: Student, compile: bool = False, kernels: str = "torch", compile_mode: str | None = None,
                 width_multiple: int = 1):
        device = student.device
        fused = fused_siren.use_triton(kernels, device)
        if fused and kernels == "auto":
            reason = fused_siren.probe(device)
            if reason is not None:
                fused_siren.disable_auto(reason)
                fused = False
            compile = compile and not fused
        # compile_mode: torch.compile's mode (None: its default; "reduce-overhead" adds CUDA graphs)
        wrap = (lambda fn: torch.compile(fn, mode=compile_mode)) if compile else (lambda fn: fn)
        self.student = student
        # CUDA graphs (inductor's graph trees): each step must be marked, see TrainStep.__call__
        self.graphs = compile and compile_mode == "reduce-overhead"
        self.kernels = "triton" if fused else "torch"
        face, body = student.face_morpher, student.body_morpher
        self.face = wrap(face.fused_forward if fused else face.forward)                      # (N, 39) → (N, 4, 128, 128)
        self.face_at = wrap(face.forward_at)                                                 # (N, 39), (M,) → (N, 4, M)
        self._features = wrap(body.fused_features if fused else body.features)             # (N, 45) → (N, 7, 512, 512)
        # width_multiple: the torch path's GEMMs on zero-padded widths (BodyMorpher.padded_weights)
        features_at = (body.fused_features_at if fused else body.features_at if width_multiple == 1
                       else functools.partial(body.features_at, pad=width_multiple))
        self._features_at = wrap(features_at)                                                # (N, 45), PixelSet → (N, M, 7)

    def body(self, body_input: torch.Tensor, poses: torch.Tensor) -> BodyMorpherOutput:
        """Student.body_outputs through these (possibly compiled) feature functions."""
        return self.student.body_outputs(body_input, poses, features=self._features, features_at=self._features_at)

    def body_at(self, body_input: torch.Tensor, poses: torch.Tensor, pixels: PixelSet) -> BodyMorpherOutput:
        """Student.body_outputs_at through these feature functions: (N, C, M) fields at pixels.output."""
        return self.student.body_outputs_at(body_input, poses, pixels, features_at=self._features_at)


class StepPrecision:
    """How the training passes run: as they are (float32 with TF32 matmuls), or with config.amp "fp16" on
    CUDA under fp16 autocast with one GradScaler per network (index 0 face, 1 body; the losses' scales
    are restored on resume, so a resumed run continues the run it was)."""

    def __init__(self, amp: str, device: torch.device, scales: list[float] | None = None):
        self.on = self.applies(amp, device)
        self.scalers = [torch.amp.GradScaler("cuda", **({"init_scale": s} if s else {}))
                        for s in (scales or [None, None])] if self.on else []

    @staticmethod
    def applies(amp: str, device: torch.device) -> bool:
        """Whether amp changes anything on device (fp16 autocast runs on CUDA only)."""
        return amp == "fp16" and device.type == "cuda"

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.float16) if self.on else contextlib.nullcontext()

    def backward(self, net: int, loss: torch.Tensor) -> None:
        (self.scalers[net].scale(loss.float()) if self.on else loss).backward()

    def step(self, net: int, opt: torch.optim.Optimizer) -> None:
        if not self.on:
            opt.step()
            return
        self.scalers[net].step(opt)     # skipped when the scaled gradients overflowed
        self.scalers[net].update()

    def scales(self) -> list[float]:
        return [float(s.get_scale()) for s in self.scalers]


def optimizers(student: Student, config: DistillConfig, device: torch.device
               ) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """The (face, body) Adam optimizers of a run (THA4: lr 1e-4 before the schedule sets it, betas 0.9 / 0.999);
    with config.optimizer "muon", distill.muon's MuonWithAdam instead (Adam's betas on the parameters it keeps).
    With config.amp on CUDA they are fused Adam: GradScaler then hands the overflow check to the optimizer's
    kernel, where with the default (foreach) Adam it reads it back to the CPU, a GPU sync per network per step.
    Same maths as foreach Adam (the updates differ by float rounding)."""
    if config.optimizer == "muon":
        return MuonWithAdam(student.face_morpher), MuonWithAdam(student.body_morpher)
    fused = {"fused": True} if StepPrecision.applies(config.amp, device) else {}
    return (torch.optim.Adam(student.face_morpher.parameters(), lr=1e-4, betas=(0.9, 0.999), **fused),
            torch.optim.Adam(student.body_morpher.parameters(), lr=1e-4, betas=(0.9, 0.999), **fused))


def pixel_parts(student: Student, config: DistillConfig, device: torch.device
                ) -> tuple[PixelParts | None, PixelParts | None]:
    """The (body, face) PixelParts of config's pixel fractions (None where a fraction is 1: every pixel).
    The body's parts cut the student's region (set it first), the face's its whole box."""
    body = face = None
    if config.body_pixel_fraction < 1:
        body = PixelParts(student.region, student.size, len(student.body_morpher.levels), config.body_pixel_fraction,
                          config.seed, device, config.body_pixel_tile)
    if config.face_pixel_fraction < 1:
        face = PixelParts(None, student.face_morpher.size, 1, config.face_pixel_fraction, config.seed + 1, device)
    return body, face


class PassGraphs:
    """CUDA graphs of one network's training pass (forward, loss, backward), one per pixel part.

    Why: a pixel-part step is launch-bound (session 12, H200: 8.0 ms of GPU work in 11–15 ms of wall time at
    parts 0.25); replaying a graph launches the whole pass at once. The optimizer step stays outside the graph
    (a few foreach launches, and the learning-rate schedule works unchanged).

    capture(key, fn): fn() runs the pass on static inputs (the same tensors every call, refilled in place) and
    returns its outputs; it runs once eagerly (torch.compile compiles there, never inside a capture; the
    gradients it leaves are dropped, no optimizer step follows), then is captured. replay(key) runs the graph
    and points the parameters' .grad at its gradients. All of a network's graphs share one memory pool, so a
    graph's temporaries may overlay another graph's outputs: outputs (the losses, the gradients) are valid
    until this network's next replay, which TrainStep respects (the optimizer consumes the gradients at once;
    the step's losses are valid until the next step).
    """

    def __init__(self, parameters):
        self.parameters = list(parameters)
        self.mempool = torch.cuda.graph_pool_handle()
        self.captured: dict = {}     # key → (graph, outputs, the parameters' gradients)

    def capture(self, key, fn) -> None:
        for p in self.parameters:   # backward allocates fresh gradients (in the graph's pool when capturing)
            p.grad = None
        fn()
        for p in self.parameters:
            p.grad = None
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.mempool):
            outputs = fn()
        self.captured[key] = (graph, outputs, [p.grad for p in self.parameters])

    def replay(self, key):
        graph, outputs, grads = self.captured[key]
        graph.replay()
        for p, grad in zip(self.parameters, grads):
            p.grad = grad
        return outputs


@dataclass
class StepLosses:
    """A step's losses as device tensors (reading them forces a GPU sync: do it only when logging)."""
    face: torch.Tensor
    body: torch.Tensor
    terms: dict[str, torch.Tensor]


class TrainStep:
    """One optimizer step of the face and body morphers on examples of a teacher pool.

    image: (4, 512, 512) the character in the student's colour convention, on the device; mask (1, 1, 128, 128)
    the movable-parts mask of the face loss. forward, precision and the parts default to what config asks.
    Calling it with (pool, generator, body_phase) draws the examples and parts from the generator (CPU: the
    same numbers on every machine, so a resumed run replays its steps), in the order the checkpoints of
    earlier runs assume: face examples, face part, body examples, body part.

    Why no GPU sync: the examples' indices are drawn on the CPU and copied to the GPU from pinned memory
    without waiting (a plain .to(device) of a CPU tensor waits for every kernel queued before it, i.e. the
    whole previous step, twice a step), so the CPU queues the next step's kernels while the GPU runs this
    one's; a small, launch-heavy step (pixel parts) then costs about its GPU time, not GPU + CPU time.

    With config.cuda_graphs (the default) on CUDA, in one process and without fp16 loss scaling (whose overflow
    check lives outside the graphs), each network's pass runs as CUDA graphs (PassGraphs, one per part; if
    capturing fails, a warning and the plain step), all captured in the first call (before the loop times its
    steps; no draws, no updates, so a run's numbers stay those of its seed): the indices land in one static
    buffer, the body phase's loss weights in a static tensor, and the step's losses are valid until the next
    step.
    """

    def __init__(self, student: Student, image: torch.Tensor, mask: torch.Tensor, config: DistillConfig,
                 face_opt: torch.optim.Optimizer, body_opt: torch.optim.Optimizer, *, ranks: Ranks = Ranks(),
                 forward: TrainForward | None = None, precision: StepPrecision | None = None,
                 parts: tuple[PixelParts | None, PixelParts | None] | None = None):
        device = image.device
        self.student, self.image, self.mask, self.config = student, image, mask, config
        self.face_opt, self.body_opt, self.ranks = face_opt, body_opt, ranks
        self.forward = forward or TrainForward(student, compile=config.compile and device.type == "cuda",
                                               kernels=config.kernels, width_multiple=config.width_multiple)
        self.precision = precision or StepPrecision(config.amp, device)
        self.body_parts, self.face_parts = parts if parts is not None else pixel_parts(student, config, device)
        self.face_batch = config.batch_size * config.face_batch_multiplier
        self.face_box_in_crop = STUDENT_FACE_BOX.relative_to(FACE_MORPHER_BOX)
        self.graphs: tuple[PassGraphs, PassGraphs] | None = None
        if config.cuda_graphs and device.type == "cuda" and ranks.world == 1 and not self.precision.on:
            self.graphs = (PassGraphs(student.face_morpher.parameters()), PassGraphs(student.body_morpher.parameters()))
            self._indices = torch.zeros(self.face_batch + config.batch_size, dtype=torch.int64, device=device)
            self._weights = torch.empty(4, device=device)     # the body phase's w_blended, w_warped, w_flow, w_color
            self._weights_of: Phase | None = None

    def __call__(self, pool, generator: torch.Generator, body_phase: Phase) -> StepLosses:
        """pool: a TeacherPool (face_crop, final, flow, poses on the device; draw(n, generator) → CPU indices)."""
        forward, precision = self.forward, self.precision
        if forward.graphs:
            # A new iteration of inductor's graph trees (torch.compile mode "reduce-overhead"): their outputs
            # from the last step may be overwritten now. Benchmark-only (distill_step.py's compiled+*+graphs
            # modes, never run with this mark); the loop's CUDA graphs are PassGraphs (config.cuda_graphs).
            torch.compiler.cudagraph_mark_step_begin()
        if self.graphs is not None and not self.graphs[0].captured:
            try:
                self.capture(pool, body_phase)
            except RuntimeError as e:   # e.g. out of memory, or an op that cannot be captured on this setup
                warnings.warn(f"training without CUDA graphs: capturing the step failed ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})", RuntimeWarning, stacklevel=2)
                self.graphs = None
                self.student.zero_grad(set_to_none=True)
        face_idx, face_part, body_idx, body_part = self.draw(pool, generator)
        loss_face = self._pass(0, face_part, lambda: self.face_pass(pool, face_idx, face_part))
        self.ranks.average_gradients(self.student.face_morpher.parameters())
        precision.step(0, self.face_opt)
        if self.graphs is not None:
            self._load_weights(body_phase)
        loss_body, terms = self._pass(1, body_part, lambda: self.body_pass(pool, body_idx, body_part, body_phase))
        self.ranks.average_gradients(self.student.body_morpher.parameters())
        precision.step(1, self.body_opt)
        return StepLosses(loss_face, loss_body, terms)

    def face_pass(self, pool, face_idx: torch.Tensor, face_part) -> torch.Tensor:
        """The face morpher's forward, loss and backward (gradients into .grad): pose[0:39] → the teacher's
        face box, on face_part's pixels (None: all). Returns the loss (0-dim, detached)."""
        config, forward, precision = self.config, self.forward, self.precision
        target_face = self.face_box_in_crop.crop(pool.face_crop[face_idx]).float()
        face_poses = pool.poses[face_idx][:, :39]
        with precision.autocast():
            if face_part is None:
                loss_face = face_loss(forward.face(face_poses), target_face, self.mask, config.face_mask_weight)
            else:
                loss_face = subset_face_loss(forward, face_poses, target_face, self.mask, *face_part, config)
        precision.backward(0, loss_face)
        return loss_face.detach()

    def body_pass(self, pool, body_idx: torch.Tensor, body_part, body_phase: Phase
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The body morpher's forward, loss and backward: the teacher's face-edited image + pose → the teacher's
        final image, on body_part's pixels (None: the whole region). Returns the loss and its terms (detached)."""
        config, forward, precision = self.config, self.forward, self.precision
        body_input = FACE_MORPHER_BOX.paste(self.image.expand(len(body_idx), -1, -1, -1), pool.face_crop[body_idx].float())
        target_flow, final, poses = pool.flow[body_idx].float(), pool.final[body_idx].float(), pool.poses[body_idx]
        if body_part is None:
            with torch.no_grad():
                target_warped = apply_flow(body_input, target_flow)
            with precision.autocast():
                loss_body, terms = body_loss(forward.body(body_input, poses), final, target_warped, target_flow,
                                             body_phase, config.masked_flow, config.blended_l2, config.edge_weight,
                                             warped_l2=config.warped_l2, flow_line_weight=config.flow_line_weight)
        else:
            with precision.autocast():
                loss_body, terms = subset_body_loss(forward, body_input, poses, final, target_flow, *body_part,
                                                    body_phase, config)
        precision.backward(1, loss_body)
        return loss_body.detach(), terms

    def capture(self, pool, body_phase: Phase) -> None:
        """Every part's graphs of both passes (PassGraphs.capture), on the index buffer as it is (any valid
        examples: a graph reads the buffer's values at each replay). 0.5 s for 32 parts on an H200, compiled
        functions warm (the first capture's eager pass compiles them otherwise)."""
        face_idx, body_idx = self._indices[:self.face_batch], self._indices[self.face_batch:]
        self._load_weights(body_phase)    # the graphs read the phase's loss weights from this tensor
        phase = Phase(body_phase.until, body_phase.lr, *self._weights.unbind())
        for part in self.face_parts.sets if self.face_parts is not None else [None]:
            self.graphs[0].capture(self._key(part), lambda part=part: self.face_pass(pool, face_idx, part))
        for part in self.body_parts.sets if self.body_parts is not None else [None]:
            self.graphs[1].capture(self._key(part), lambda part=part: self.body_pass(pool, body_idx, part, phase))

    @staticmethod
    def _key(part):
        return None if part is None else id(part[0])   # parts are fixed objects, built once

    def _pass(self, net: int, part, fn):
        """fn() (a network's pass) with its gradients fresh: eagerly, or the part's graph replayed."""
        if self.graphs is None:
            (self.face_opt, self.body_opt)[net].zero_grad(set_to_none=True)
            return fn()
        return self.graphs[net].replay(self._key(part))

    def _load_weights(self, phase: Phase) -> None:
        """phase's loss weights into the tensor the graphs read, when the phase changes (without a sync), so one
        graph per part serves every phase."""
        if phase != self._weights_of:
            weights = torch.tensor([phase.w_blended, phase.w_warped, phase.w_flow, phase.w_color])
            self._weights.copy_(weights.pin_memory(), non_blocking=True)
            self._weights_of = phase

    def draw(self, pool, generator: torch.Generator):
        """(face indices, face part, body indices, body part): indices on the pool's device (one copy from
        pinned memory, no sync), parts (PixelSet, share) or None. The draws' order is fixed (see the class)."""
        face_idx = pool.draw(self.face_batch, generator)
        face_part = self.face_parts.pick(generator) if self.face_parts is not None else None
        body_idx = pool.draw(self.config.batch_size, generator)
        body_part = self.body_parts.pick(generator) if self.body_parts is not None else None
        both = torch.cat([face_idx, body_idx])
        if self.graphs is not None:    # the graphs read the indices from one buffer
            both = self._indices.copy_(both.pin_memory(), non_blocking=True)
        else:
            both = to_device_async(both, pool.poses.device)
        return both[:len(face_idx)], face_part, both[len(face_idx):], body_part


def to_device_async(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on `device` without waiting for the device's queued work: through pinned memory on CUDA
    (the caching host allocator keeps the pinned block until the copy has run); unchanged elsewhere."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
