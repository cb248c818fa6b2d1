"""DistillConfig: every knob of a distillation run, with one default each.

Example counts follow THA4's units ("examples shown to the student"); the schedules are THA4's
(facts §4.3) expressed as fractions of the run, so a short run keeps the same shape.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace


@dataclass(frozen=True)
class Phase:
    until: float          # fraction of the run's examples at which this phase ends
    lr: float
    w_blended: float = 1.0
    w_warped: float = 1.0
    w_flow: float = 1.0
    w_color: float = 1.0


# THA4 body-morpher schedule (200k/400k/600k/800k/1.3M/1.5M of 1.5M examples).
THA4_BODY_PHASES: tuple[Phase, ...] = (
    Phase(200 / 1500, 1e-4, 0.25, 0.25, 0.5, 2.0),
    Phase(400 / 1500, 3e-5, 0.25, 0.25, 0.5, 2.0),
    Phase(600 / 1500, 3e-5, 1.0, 2.5, 5.0, 1.0),
    Phase(800 / 1500, 1e-5, 1.0, 2.5, 5.0, 1.0),
    Phase(1300 / 1500, 1e-5, 10.0, 1.0, 1.0, 1.0),
    Phase(1.0, 3e-6, 10.0, 1.0, 1.0, 1.0),
)
# THA4 face-morpher schedule: 1e-4, /3 after 20%, /10 after 50%, /30 after 80%.
THA4_FACE_PHASES: tuple[Phase, ...] = (
    Phase(0.2, 1e-4), Phase(0.5, 1e-4 / 3), Phase(0.8, 1e-5), Phase(1.0, 1e-4 / 30),
)


@dataclass(frozen=True)
class DistillConfig:
    """Defaults are for new runs. A config saved before a field existed reads that field from
    PREDATING_VALUES (see there), so that a resumed or re-read old run stays the run it was."""
    teacher: str = "tha3/separable_float"   # registry name in kyara.teacher.TEACHERS
    seed: int = 0
    examples: int = 200_000                 # body-morpher examples shown (THA4: 1.5M); 0 = fit the time budget
    batch_size: int = 16                    # body-morpher poses per step
    face_batch_multiplier: int = 2          # face morpher sees this many × batch_size poses per step (its error is ~1/4 of the total)
    lr_scale: float = 6.0                   # multiplies every phase's LR (THA4 used batch 8; we use larger batches). 6 with the weight
                                            # average (ema_decay) and the face at 3: +0.45 / +0.50 dB on the sample, +0.37 / +0.37 on twin_tails,
                                            # +1.02 on lambda_00 against 3 without it, 10-minute runs (sessions 31–33, docs/benchmarks.md)
    face_lr_scale: float = 3.0              # > 0: the face morpher's own multiplier instead of lr_scale (0 = lr_scale). The face diverges
                                            # first: at lr_scale 12 it never learned, at 6 it blew up at step ~6,000 in one of two runs,
                                            # at 3 once in ~14 runs, which the divergence guard caught (lambda_00, session 38)
    lr_decay: str = "steps"                 # "steps": each phase's LR (THA4); "exponential": a smooth geometric decay from the first phase's LR
                                            # to the last's (lr_at). One 10-minute run: 31.58 against 31.80 dB (twin_tails; docs/distill.md)
    lr_floor: float = 0.0                   # > 0: no rate falls below lr_floor × the schedule's first (before the scales), e.g. 0.2: THA4's
                                            # last three body phases at 2e-5 (were 1e-5, 1e-5, 3e-6). Why: ×6 on every rate gained +0.42 dB in a 10-minute
                                            # run, ×12 lost 0.9 dB from its start (session 19); floor 0.2 with the average: 31.66 against ×6's 32.23
    lr_warmup_steps: int = 0                # > 0: the first N steps ramp every rate linearly up to the schedule's ((step + 1) / N of it),
                                            # e.g. for a warm start (init_from), whose weights Adam's full-size first steps would scatter
    ema_decay: float = 0.999                # > 0: keep an exponential moving average of the student's weights (ema.WeightAverage,
                                            # β per step: ~the last 1,000 steps) and write it as the result; 0 = off. Alone it gained
                                            # nothing (+0.01 dB); it is what makes lr_scale 6 pay (docs/distill.md)
    divergence_check_steps: int = 500       # every N steps a network whose mean loss is > 2× its best is rolled back and
                                            # goes on at half its rate (guard.DivergenceGuard: a --lr-scale 6 run lost its face
                                            # morpher for good at step ~6,000); 0 = off
    face_mask_weight: float = 20.0          # THA4: L1 + 20 × L1 inside the movable-parts mask
    teacher_batch_size: int = 32            # poses per teacher forward
    pool_size: int = 4096                   # teacher examples kept on the device for reuse
    reuse: float = 8.0                      # average times each teacher example's pixels are shown (the teacher is ~4–5 ms/pose on an H100/H200);
                                            # with body_pixel_fraction < 1 an example stays round(1/fraction) times as many steps
    eval_poses: int = 32                    # held-out poses for the progress-bar PSNR
    eval_every_s: float = 30.0
    checkpoint_every_examples: int = 50_000
    masked_flow: bool = True                # flow loss only where the teacher's output is visible
    identity_init: bool = True              # start the body morpher at "no motion" (zero flow/alpha/colour head)
    init_from: str = ""                     # a .kyara file whose student weights start the run (instead of THA4's initialisation
                                            # and identity_init), e.g. an earlier student of an edited drawing; "" = off
    init_networks: str = "both"             # with init_from: "both" networks, or only the "body" morpher (its flow is the part that
                                            # carries over to another character; the face morpher paints that character's face)
    tf32: bool = True                       # TF32 matmuls for the student (1.36× faster steps on an H100; every measured run used it)
    compile: bool = True                    # torch.compile the student's training forward passes (CUDA only): same maths, ~1.7× faster steps
    optimizer: str = "adam"                 # "muon": Muon on the sine layers' hidden weights, Adam on the rest (distill.muon);
                                            # "adam" (THA4's) until a GPU ablation shows a gain
    amp: str = ""                           # "fp16": the student's training passes under fp16 autocast with a GradScaler per network (CUDA only;
                                            # 1.58× faster steps with padding on an H200); "" = off until the recipe ablation
    width_multiple: int = 8                 # train with the body's widths zero-padded to multiples of this (BodyMorpher.padded_weights): same maths,
                                            # aligned GEMMs: 1.18× faster steps on an H200 (docs/benchmarks.md, session 10)
    cuda_graphs: bool = True                # each network's training pass as CUDA graphs, one per pixel part (step.PassGraphs; CUDA, one process,
                                            # not with amp fp16, else ignored): same maths, few launches: 1.41× a step at parts 0.25, 1.02× at all pixels (H200)
    kernels: str = "torch"                  # student's sine layers: "torch", "triton" (fused kernels, kyara.nn.fused_siren), "auto" = triton on CUDA when it runs.
                                            # Default torch (compiled): 2.1× faster than the Triton kernels on an H200 (docs/benchmarks.md, issue 16)
    blended_l2: float = 40.0                # extra MSE on the blended image, × the phase's w_blended: +1.0–2.1 dB (docs/benchmarks.md)
    flow_weight: float = 25.0               # multiplies every body phase's flow-term weight (body_phase_at). With blended_l2 40 the flow
                                            # term is ~1/2,300 of the late body loss's gradient (twin_tails student, CPU; docs/distill.md), ~23× less
                                            # than in THA4's loss, while the flow is what limits a student. 1 = THA4's weights. 25 (the default since
                                            # session 40): +0.11 to +0.22 dB and LPIPS 6-13 % better on three long-hair runs, +0.20 dB on the sample
    flow_line_weight: float = 0.0           # the flow term's pixels weighed 1 + this × losses.line_detail (1 on the teacher image's
                                            # lines, ~0 on flat colour), a weighted mean: the flow's push moved onto the lines, where a
                                            # flow error costs (72–77 % of the warp's error, sessions 38–39). Needs masked_flow. Off until measured
    edge_weight: float = 0.0                # extra blended-image MSE on the teacher's silhouette edges (losses.alpha_edges); off until measured
    warped_l2: float = 0.0                  # extra MSE of the warped image (the input moved by the student's flow against the teacher's flow),
                                            # × the phase's w_blended as blended_l2: pushes the flow, what limits a student, where the image has
                                            # detail, which the blended MSE reaches only through (1 − alpha). Off until measured (docs/distill.md)
    mask_poses: int = 64                    # poses used to derive the movable-parts mask
    region: bool = True                     # body morpher trained (and run) only where the character can be
    region_margin_px: int = 12              # dilation of that region (covers poses beyond the pool's; ≥ flow_weight's 8)
    body_pixel_fraction: float = 0.25       # share of the region's pixels the body morpher trains on per step, drawn at
                                            # random (1 = all: the exact loss). < 1: cheaper steps, noisier gradients. 0.25 with the face's
                                            # 0.25: 4.07× the filed step's examples/s, and +1.0 dB at --minutes 10 on twin_tails (31.80 vs
                                            # 30.79 dB, H100, seed 0; docs/benchmarks.md sessions 14 and 16)
    body_pixel_tile: int = 16               # those parts are made of tile × tile squares (1 = single pixels); only with a fraction < 1
    face_pixel_fraction: float = 0.25       # the same for the face morpher's 128 × 128 box (single pixels: it has one level)
    pose_dataset: str = ""                  # official THA4 pose_dataset.pt to draw training poses from; "" = kyara.pose_sampler
    body_widths: tuple[int, ...] = (360, 180, 90)   # the body morpher's hidden width per level, 128² / 256² / 512² (THA4's:
                                            # body_morpher.WIDTHS). The file keeps the shape. E.g. 510,180,90: 2.47 MB fp32, over the
                                            # 2 MB goal unless stored in fp16 (1.24; docs/benchmarks.md sessions 35–36). Only THA4's distilled so far
    body_phases: tuple[Phase, ...] = THA4_BODY_PHASES
    face_phases: tuple[Phase, ...] = THA4_FACE_PHASES

    def __post_init__(self):
        if self.examples < 0:
            raise ValueError("DistillConfig.examples must be >= 0 (0 = size the run to the time budget)")
        for f in ("batch_size", "face_batch_multiplier", "teacher_batch_size", "pool_size",
                  "eval_poses", "checkpoint_every_examples", "mask_poses"):
            if getattr(self, f) < 1:
                raise ValueError(f"DistillConfig.{f} must be >= 1, got {getattr(self, f)}")
        if self.region_margin_px < 0:
            raise ValueError(f"DistillConfig.region_margin_px must be >= 0, got {self.region_margin_px}")
        if self.blended_l2 < 0:
            raise ValueError(f"DistillConfig.blended_l2 must be >= 0, got {self.blended_l2}")
        if not 0 <= self.flow_weight < float("inf"):
            raise ValueError(f"DistillConfig.flow_weight must be a number >= 0, got {self.flow_weight}")
        if not 0 <= self.flow_line_weight < float("inf"):
            raise ValueError(f"DistillConfig.flow_line_weight must be a number >= 0, got {self.flow_line_weight}")
        if self.flow_line_weight and not self.masked_flow:
            raise ValueError("DistillConfig.flow_line_weight needs masked_flow (it reweighs the masked flow term)")
        if not 0 <= self.edge_weight < float("inf"):
            raise ValueError(f"DistillConfig.edge_weight must be a number >= 0, got {self.edge_weight}")
        if not 0 <= self.warped_l2 < float("inf"):
            raise ValueError(f"DistillConfig.warped_l2 must be a number >= 0, got {self.warped_l2}")
        if self.optimizer not in ("adam", "muon"):
            raise ValueError(f"DistillConfig.optimizer must be adam or muon, got {self.optimizer!r}")
        if self.amp not in ("", "fp16"):
            raise ValueError(f"DistillConfig.amp must be '' (off) or 'fp16'; got {self.amp!r}")
        if self.width_multiple not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"DistillConfig.width_multiple must be 1, 2, 4, 8, 16 or 32, got {self.width_multiple}")
        if self.kernels not in ("auto", "triton", "torch"):
            raise ValueError(f"DistillConfig.kernels must be auto, triton or torch; got {self.kernels!r}")
        for f in ("body_pixel_fraction", "face_pixel_fraction"):
            if not 0 < getattr(self, f) <= 1:
                raise ValueError(f"DistillConfig.{f} must be in (0, 1], got {getattr(self, f)}")
        if self.body_pixel_tile not in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512):
            raise ValueError(f"DistillConfig.body_pixel_tile must be a power of 2 up to 512, got {self.body_pixel_tile}")
        if self.lr_decay not in ("steps", "exponential"):
            raise ValueError(f"DistillConfig.lr_decay must be steps or exponential, got {self.lr_decay!r}")
        if not 0 <= self.lr_floor <= 1:
            raise ValueError(f"DistillConfig.lr_floor must be in [0, 1] (a fraction of the first phase's rate; 0 = off), got {self.lr_floor}")
        if not (self.ema_decay == 0 or 0 < self.ema_decay < 1):
            raise ValueError(f"DistillConfig.ema_decay must be 0 (off) or in (0, 1), got {self.ema_decay}")
        if self.divergence_check_steps < 0:
            raise ValueError(f"DistillConfig.divergence_check_steps must be >= 0 (0 = off), got {self.divergence_check_steps}")
        if self.lr_warmup_steps < 0:
            raise ValueError(f"DistillConfig.lr_warmup_steps must be >= 0, got {self.lr_warmup_steps}")
        if self.init_networks not in ("both", "body"):
            raise ValueError(f"DistillConfig.init_networks must be both or body, got {self.init_networks!r}")
        if self.reuse <= 0 or self.lr_scale <= 0:
            raise ValueError("DistillConfig.reuse and lr_scale must be > 0")
        if not 0 <= self.face_lr_scale < float("inf"):
            raise ValueError(f"DistillConfig.face_lr_scale must be 0 (= lr_scale) or a positive number, got {self.face_lr_scale}")
        if isinstance(self.body_widths, list):   # from JSON (from_json, or a dict of to_json's): no tuples there
            object.__setattr__(self, "body_widths", tuple(self.body_widths))
        widths = self.body_widths
        if (not isinstance(widths, tuple) or len(widths) != 3
                or not all(isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= 1024 for w in widths)):
            raise ValueError(f"DistillConfig.body_widths must be 3 integers in [1, 1024] (128², 256², 512² levels), "
                             f"got {widths!r}")
        if self.pool_size < self.batch_size * self.face_batch_multiplier:
            raise ValueError("DistillConfig.pool_size must hold at least one face batch "
                             f"({self.batch_size * self.face_batch_multiplier})")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "DistillConfig":
        """A saved config (checkpoint, .kyara metadata). A field it predates takes its PREDATING_VALUES
        entry, else the dataclass default."""
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown DistillConfig fields: {', '.join(sorted(unknown))}")
        data = {**PREDATING_VALUES, **data}
        for key in ("body_phases", "face_phases"):
            if key in data:
                data[key] = tuple(Phase(**p) for p in data[key])
        return cls(**data)


# The one rule for configs saved before a field existed: field → the value those runs used. The dataclass
# default is what a *new* run gets; a resumed run must stay the run it was, so every field that changes
# the numbers gets an entry here when it is added (fields that change only speed, like compile, need none).
PREDATING_VALUES: dict[str, object] = {
    "blended_l2": 0.0,   # old checkpoints had no blended-image MSE term (new runs: 40)
    "edge_weight": 0.0,  # nor an edge term (new runs: 0 too, until an ablation shows a gain)
    "flow_weight": 1.0,  # and THA4's flow-term weight (new runs: 25 since session 40)
    "flow_line_weight": 0.0,  # nor a line-weighted flow term (new runs: 0 too, until an ablation shows a gain)
    "warped_l2": 0.0,    # nor a warped-image MSE term (new runs: 0 too, until an ablation shows a gain)
    "amp": "",           # nor fp16 autocast
    "optimizer": "adam",  # nor a choice of optimizer (Adam, THA4's)
    "lr_decay": "steps",  # nor a choice of learning-rate decay (THA4's steps)
    "lr_floor": 0.0,      # nor a floor under the late rates
    "ema_decay": 0.0,     # nor a weight average
    "lr_warmup_steps": 0,  # nor a learning-rate warm-up
    "init_from": "",      # nor a warm start
    "init_networks": "both",
    "divergence_check_steps": 0,  # nor a divergence guard
    "face_lr_scale": 0.0,         # nor a face rate of its own
    "body_pixel_fraction": 1.0,   # and trained on every pixel (parts became the default in session 16)
    "face_pixel_fraction": 1.0,
    "body_widths": (360, 180, 90),  # and THA4's body shape (the only one before session 36)
}


def phase_at(phases: tuple[Phase, ...], fraction: float) -> Phase:
    for phase in phases:
        if fraction < phase.until:
            return phase
    return phases[-1]


def body_phase_at(config: "DistillConfig", fraction: float) -> Phase:
    """The body morpher's loss weights and rate at `fraction` of the run: its schedule's phase, with the flow
    term's weight × config.flow_weight."""
    phase = phase_at(config.body_phases, fraction)
    return phase if config.flow_weight == 1 else replace(phase, w_flow=phase.w_flow * config.flow_weight)


def lr_at(phases: tuple[Phase, ...], fraction: float, decay: str = "steps", floor: float = 0.0) -> float:
    """The learning rate (before lr_scale) at `fraction` ∈ [0, 1] of a run: the phase's (decay "steps", THA4's
    schedule), or (decay "exponential") first_lr · (last_lr / first_lr) ** fraction, the same start and end
    without the plateaus. Why offer it: in a 10-minute parts run (docs/benchmarks.md, session 13) every gain in
    held-out PSNR came right after an LR drop and the PSNR stayed flat between drops, i.e. the run sat at the
    noise floor of each LR for minutes. floor > 0: never below floor × the first phase's rate."""
    first, last = phases[0].lr, phases[-1].lr
    if decay == "steps":
        lr = phase_at(phases, fraction).lr
    else:
        lr = first * (last / first) ** min(max(fraction, 0.0), 1.0)
    return max(lr, floor * first)


def step_lr(phases: tuple[Phase, ...], config: "DistillConfig", step: int, steps_total: int,
            network: str = "body") -> float:
    """The learning rate of one network ("face" or "body", whose schedule phases is) at optimizer step `step` of
    `steps_total`: the schedule's (lr_at, with config.lr_decay), × config.lr_scale (the face: × face_lr_scale
    where that is set), × the warm-up's (step + 1) / lr_warmup_steps while that is < 1."""
    scale = config.face_lr_scale if network == "face" and config.face_lr_scale else config.lr_scale
    lr = lr_at(phases, step / steps_total, config.lr_decay, config.lr_floor) * scale
    if config.lr_warmup_steps and step < config.lr_warmup_steps:
        lr *= (step + 1) / config.lr_warmup_steps
    return lr
