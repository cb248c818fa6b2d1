"""`kyara distill IMAGE -o OUT.kyara`: distill the teacher into a per-character student."""
from __future__ import annotations

from argparse import BooleanOptionalAction
from dataclasses import fields
from pathlib import Path

from kyara.distill.config import DistillConfig
from kyara.cli import HelpFormatter

DEFAULTS = DistillConfig()
# Under this a finished run gets a note: the short-haired characters measured reach 35–37 dB in 10 minutes on an
# H100, the long-haired ones 31–34 (docs/benchmarks.md, issue 16).
LOW_PSNR_DB = 34.0
# A finished run under this many examples is low for being short, whatever the drawing: a third of the fewest a
# 10-minute run on an H100 trained (598,800, twin_tails; the short-haired drawings 680,000–800,000).
SHORT_RUN_EXAMPLES = 200_000


def register(sub) -> None:
    p = sub.add_parser("distill", help="distill a character image into a small real-time student (.kyara)",
                       description="Train a per-character student (THA4 §4) to mimic the teacher. Needs a GPU "
                                   "for practical speed; checkpoints and resumes. Prints progress with ETA and "
                                   "held-out PSNR against the teacher. Several GPUs: "
                                   "`torchrun --nproc-per-node N -m kyara distill ...` (data parallel; "
                                   "--examples and --batch-size count per step over all GPUs / per GPU). "
                                   "The file also carries the CPU-lite student's plan (`--student lite`: its movable face pixels and "
                                   "the body grid that keeps it within 1.25 dB of the full student); "
                                   "`kyara distill --lite-from FILE.kyara` adds it to an older file (seconds, "
                                   "any CPU: the lite student needs no training of its own).",
                       formatter_class=HelpFormatter)
    p.add_argument("image", nargs="?", help="512×512 RGBA character image (PNG/WebP), transparent background")
    p.add_argument("-o", "--output", help="output .kyara file (required with IMAGE; with --lite-from: default "
                                          "in place)")
    p.add_argument("--lite-from", metavar="FILE.kyara",
                   help="instead of distilling: add the CPU-lite student's plan (face pixels, body grid) to this "
                        "distilled character (written to --output, or in place)")
    p.add_argument("--teacher", default=DEFAULTS.teacher, help="teacher network")
    p.add_argument("--weights", metavar="DIR", help="directory of official teacher weight files")
    p.add_argument("--device", default="auto", help="auto (a CUDA GPU if there is one, else the CPU), cpu, cuda or cuda:N")
    p.add_argument("--work-dir", help="checkpoints and log.jsonl (default: OUTPUT without suffix + '.work')")
    p.add_argument("--resume", action="store_true",
                   help="continue exactly from the work dir's checkpoint (its settings win). Give the same "
                        "--minutes: this session's own start (teacher, pool, compiling) is not charged to it, so a "
                        "run cut off mid-plan finishes its plan")
    p.add_argument("--restart", action="store_true",
                   help="start a new run in a work dir that holds an earlier run's checkpoint, replacing it and its "
                        "log (without --resume or --restart such a work dir is an error, so a rerun of the same "
                        "command cannot overwrite a stopped run by accident)")
    p.add_argument("--minutes", type=float,
                   help="time budget of the whole run, resumed sessions included (not their own starts): with --examples 0 the schedule "
                        "is sized to fit it; the run stops (with a checkpoint) when it is spent. A new run whose "
                        "teacher setup (--pool-size poses and ~100 more) would take more than half of it stops "
                        "after two teacher batches and names a --pool-size that fits")
    p.add_argument("--stop-after", type=float, metavar="MINUTES",
                   help="end this session after MINUTES (checkpoint written; continue with --resume), "
                        "e.g. to fit a job-time limit; the schedule is unchanged")
    p.add_argument("--pose-dataset", default=None, metavar="FILE",
                   help="draw training poses from the official THA4 pose_dataset.pt (downloaded by hand); "
                        "default: kyara's own pose sampler (docs/distill.md)")
    p.add_argument("--mask", help="512×512 movable-parts mask PNG (white = movable); default: derived from the teacher")
    p.add_argument("--fit", action="store_true", help="scale and pad a non-512 image to 512×512")
    p.add_argument("--name", help="character name stored in the file (default: image file name)")
    p.add_argument("--examples", type=int, default=None,
                   help=f"body-morpher training examples; 0 = as many as fit in --minutes (the default when "
                        f"--minutes is given; otherwise {DEFAULTS.examples:,})")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size,
                   help="body-morpher training examples per step (per GPU with torchrun)")
    p.add_argument("--lr-scale", type=float, default=DEFAULTS.lr_scale,
                   help="multiplies THA4's learning rates (the body morpher's; the face has its own, below). The default "
                        "pays with the weight average (--ema-decay): +0.37 to +1.02 dB at 10 minutes against 3 without it "
                        "(docs/distill.md)")
    p.add_argument("--face-lr-scale", type=float, default=DEFAULTS.face_lr_scale, metavar="S",
                   help="the face morpher's own multiplier (0 = --lr-scale's). The face diverges first: at 12 it "
                        "never learned, at 6 it blew up in one of two 10-minute runs, at 3 once in ~14 (caught and rolled back by "
                        "--divergence-check; docs/distill.md)")
    p.add_argument("--lr-decay", choices=["steps", "exponential"], default=DEFAULTS.lr_decay,
                   help="steps: THA4's learning rate per phase (the default); exponential: a smooth geometric decay "
                        "between the same first and last rates (one 10-minute run: 0.22 dB below steps; docs/distill.md)")
    p.add_argument("--optimizer", choices=["adam", "muon"], default=DEFAULTS.optimizer,
                   help="adam: THA4's (the default); muon: Muon (orthogonalised momentum) on the sine layers' hidden weights, "
                        "Adam on the rest, at the same rates (kyara.distill.muon). 10-minute GPU runs so far: +0.53 and +0.62 dB "
                        "on two long-haired characters, +0.91 on the sample (docs/distill.md)")
    p.add_argument("--lr-floor", type=float, default=DEFAULTS.lr_floor, metavar="F",
                   help="no learning rate falls below F × the schedule's first (0 = off, the default; e.g. 0.2 runs THA4's last "
                        "three body phases at 2e-5 × --lr-scale). One 10-minute run at --lr-scale 6 --ema-decay 0.999: 0.57 dB below the same run without it (docs/distill.md)")
    p.add_argument("--lr-warmup", dest="lr_warmup_steps", type=int, default=DEFAULTS.lr_warmup_steps, metavar="STEPS",
                   help="ramp every learning rate up linearly over the first STEPS steps (0 = off, the default); "
                        "meant for --init-from, whose weights the full-size first steps scatter (docs/distill.md)")
    p.add_argument("--ema-decay", type=float, default=DEFAULTS.ema_decay, metavar="BETA",
                   help="keep a moving average of the student's weights (BETA per step; 0.999: about the last "
                        "1000 steps) and write it as the result; 0 = off (alone it gained +0.01 dB; it is what lets the "
                        "default --lr-scale pay; docs/distill.md)")
    p.add_argument("--init-from", default=None, metavar="FILE.kyara",
                   help="start from this distilled character's student weights instead of a fresh initialisation, "
                        "e.g. the student of an earlier version of the drawing; 'sample' = the bundled sample's "
                        "student (as a start for another character, one 10-minute run lost its face morpher at --lr-scale 6; docs/distill.md)")
    p.add_argument("--init-networks", choices=["both", "body"], default=DEFAULTS.init_networks,
                   help="with --init-from: take both networks, or only the body morpher (its motion carries over "
                        "to another character; the face morpher paints one character's face)")
    p.add_argument("--divergence-check", dest="divergence_check_steps", type=int, default=DEFAULTS.divergence_check_steps,
                   metavar="STEPS", help="every STEPS steps, a network whose mean loss over them is more than twice its best goes "
                        "back to its state of two checks before and on at half its learning rate (logged; 0 = off)")
    p.add_argument("--pool-size", type=int, default=DEFAULTS.pool_size,
                   help="teacher examples kept for reuse, all computed before the first step (~13 s on an H100, "
                        "~1.5 h on a 2-core CPU at the default)")
    p.add_argument("--reuse", type=float, default=DEFAULTS.reuse, help="average uses of each teacher example's pixels (with --body-pixel-fraction F an example "
                        "stays round(1/F) times as many steps, each on a part of its pixels)")
    p.add_argument("--checkpoint-every-examples", type=int, default=DEFAULTS.checkpoint_every_examples, metavar="N",
                   help="write a checkpoint (for --resume) every N training examples")
    p.add_argument("--tf32", action=BooleanOptionalAction, default=DEFAULTS.tf32,
                   help="TF32 matmuls for the student (faster on Ampere and later GPUs)")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed,
                   help="seed for the student's initial weights and the training poses")
    p.add_argument("--face-batch-multiplier", type=int, default=DEFAULTS.face_batch_multiplier,
                   help="face-morpher poses per step, as a multiple of --batch-size")
    p.add_argument("--no-region", dest="region", action="store_false",
                   help="train the body morpher on the whole canvas (default: only where the character can "
                        "be, which is faster; the region is stored in the .kyara file)")
    p.add_argument("--region-margin", dest="region_margin_px", type=int, default=DEFAULTS.region_margin_px,
                   metavar="PX", help="dilation of the character region in pixels")
    p.add_argument("--no-compile", dest="compile", action="store_false",
                   help="don't torch.compile the student's training passes on CUDA (compiling takes ~25 s "
                        "once and makes each step ~1.7× faster)")
    p.add_argument("--amp", choices=["fp16"], default=DEFAULTS.amp or None,
                   help="run the student's training passes under fp16 autocast (CUDA; a loss scaler per network): "
                        "1.58× faster steps with the default padding on an H200, +1.8 dB in one short run; off until "
                        "the recipe ablation (docs/distill.md)")
    p.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                   help="don't run the training passes as CUDA graphs (default on CUDA with one GPU and without "
                        "--amp: the same maths with far fewer kernel launches; 1.41× faster steps with "
                        "--body-pixel-fraction 0.25 --face-pixel-fraction 0.25 on an H200, 1.02× at every pixel)")
    p.add_argument("--width-multiple", type=int, default=DEFAULTS.width_multiple, metavar="K",
                   help="train with the body network's widths zero-padded to multiples of K (the same maths; "
                        "tensor-core GEMMs want multiples of 4 (TF32) or 8 (fp16); default 8: 1.18× faster "
                        "steps on an H200; 1 = no padding)")
    p.add_argument("--body-widths", type=_widths, default=DEFAULTS.body_widths, metavar="W0,W1,W2",
                   help="the student body network's hidden widths at its 128², 256² and 512² levels (default THA4's "
                        "360,180,90: 1.81 MB fp32 with the face; the .kyara file keeps the shape, and kyara, the CPU "
                        "and the browser renderers load any; official THA4 export needs the default). Wider coarse "
                        "levels cost bytes, a wider 512² level costs time (docs/benchmarks.md, session 35); 510,180,90 "
                        "gained nothing in 10 minutes on a long-haired drawing (session 37)")
    p.add_argument("--blended-l2", type=float, default=DEFAULTS.blended_l2, metavar="W",
                   help="add W × MSE of the blended image to the body loss (targets PSNR; 0 = THA4's L1 only)")
    p.add_argument("--flow-weight", type=float, default=DEFAULTS.flow_weight, metavar="K",
                   help="multiply the body loss's flow-term weight in every phase by K (default %(default)g; 1 = THA4's "
                        "weights, under which, with --blended-l2 40, the flow term is ~1/2,300 of the late loss's "
                        "gradient). 25 against 1 in 10-minute runs: +0.11 to +0.22 dB and LPIPS 6-13 %% better on "
                        "two long-haired drawings, +0.20 dB on the sample (docs/distill.md)")
    p.add_argument("--flow-line-weight", type=float, default=DEFAULTS.flow_line_weight, metavar="L",
                   help="weigh the flow term's pixels by 1 + L on the teacher image's lines (a weighted mean: its size "
                        "stays, its push moves from flat colour onto the lines, where a flow error costs the image); "
                        "0 = off (the default until measured)")
    p.add_argument("--edge-weight", type=float, default=DEFAULTS.edge_weight, metavar="W",
                   help="add W × the blended image's squared error on the teacher's silhouette edges (a 5-px "
                        "band) to the body loss; 0 = off (the default until measured)")
    p.add_argument("--warped-l2", type=float, default=DEFAULTS.warped_l2, metavar="W",
                   help="add W × MSE of the warped image (the input moved by the student's flow, against the teacher's "
                        "flow) to the body loss, weighted by phase like --blended-l2: a direct push on the flow where the "
                        "image has detail; 0 = off (the default: W = 40 gave no gain in a 10-minute run; docs/distill.md)")
    p.add_argument("--body-pixel-fraction", type=float, default=DEFAULTS.body_pixel_fraction, metavar="F",
                   help="train the body network on a random 1/round(1/F) of the character region per step "
                        "(cheaper steps, noisier gradients; 1 = every pixel, the exact loss). The default 0.25 with "
                        "--face-pixel-fraction 0.25: 4.07× the examples/s of every pixel at issue 16's filing, and "
                        "+1.0 dB in a 10-minute run on a long-hair character (docs/distill.md)")
    p.add_argument("--body-pixel-tile", type=int, default=DEFAULTS.body_pixel_tile, metavar="T",
                   help="with --body-pixel-fraction < 1: the parts are made of T×T squares (a power of 2; "
                        "1 = single pixels, which saves less: the coarser levels still run almost everywhere)")
    p.add_argument("--face-pixel-fraction", type=float, default=DEFAULTS.face_pixel_fraction, metavar="F",
                   help="train the face network on a random 1/round(1/F) of its 128×128 box per step (1 = every "
                        "pixel; see --body-pixel-fraction)")
    p.set_defaults(func=run)


def _widths(text: str) -> tuple[int, ...]:
    """--body-widths "360,180,90" → (360, 180, 90); the range is DistillConfig's to check."""
    from argparse import ArgumentTypeError

    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ArgumentTypeError(f"expected three comma-separated integers like 360,180,90, got {text!r}") from None


def checked_config(args) -> DistillConfig:
    """The DistillConfig of the options; a bad value is a KyaraError naming the option (not the field)."""
    import math
    import re

    from kyara.errors import KyaraError

    for option, value in (("--minutes", args.minutes), ("--stop-after", args.stop_after)):
        if value is not None and not 0 < value < 1e6:   # also refuses NaN
            raise KyaraError(f"{option} must be a positive number of minutes, got {value:g}")
    for option, value in (("--lr-scale", args.lr_scale), ("--reuse", args.reuse)):
        if not 0 < value < math.inf:
            raise KyaraError(f"{option} must be a positive number, got {value:g}")
    if not 0 <= args.blended_l2 < math.inf:
        raise KyaraError(f"--blended-l2 must be a number >= 0, got {args.blended_l2:g}")
    if not 0 <= args.flow_weight < math.inf:
        raise KyaraError(f"--flow-weight must be a number >= 0, got {args.flow_weight:g}")
    if not 0 <= args.flow_line_weight < math.inf:
        raise KyaraError(f"--flow-line-weight must be a number >= 0, got {args.flow_line_weight:g}")
    if not 0 <= args.edge_weight < math.inf:
        raise KyaraError(f"--edge-weight must be a number >= 0, got {args.edge_weight:g}")
    if not 0 <= args.warped_l2 < math.inf:
        raise KyaraError(f"--warped-l2 must be a number >= 0, got {args.warped_l2:g}")
    if args.examples is None:
        args.examples = 0 if args.minutes else DEFAULTS.examples
    args.amp = args.amp or ""
    args.init_from = args.init_from or DEFAULTS.init_from          # None: no "(default: )" in --help
    args.pose_dataset = args.pose_dataset or DEFAULTS.pose_dataset
    try:
        return DistillConfig(**{f.name: getattr(args, f.name) for f in fields(DistillConfig) if hasattr(args, f.name)})
    except ValueError as e:   # DistillConfig.batch_size must be >= 1 → --batch-size must be >= 1
        options = {"region_margin_px": "region-margin", "lr_warmup_steps": "lr-warmup",
                   "divergence_check_steps": "divergence-check"}
        raise KyaraError(re.sub(r"DistillConfig\.(\w+)", lambda m: "--" + options.get(m[1], m[1].replace("_", "-")),
                                str(e))) from None


def check_work_dir(work: Path, *, resume: bool, restart: bool) -> None:
    """Refuse to start a new run over an earlier run's checkpoint unless --restart says so (then remove it and
    its log), so that rerunning a stopped run's command without --resume loses nothing."""
    from kyara.distill.checkpoint import CHECKPOINT_NAME, LOG_NAME, load_checkpoint
    from kyara.errors import KyaraError

    if resume and restart:
        raise KyaraError("--resume continues the work dir's run and --restart replaces it: give one of them")
    checkpoint = work / CHECKPOINT_NAME
    if resume or not checkpoint.exists():
        return
    if restart:
        for name in (CHECKPOINT_NAME, LOG_NAME):
            (work / name).unlink(missing_ok=True)
        return
    meta = load_checkpoint(checkpoint)[1]
    minutes = float(meta.get("elapsed_s", 0)) / 60
    raise KyaraError(f"{checkpoint}: an earlier run's checkpoint (step {int(meta['step']):,}, {minutes:.1f} minutes "
                     "in). Continue that run with --resume (and the same --minutes), start a new one in its place "
                     "with --restart, or give another --work-dir")


def run(args) -> int:
    import time

    started = time.perf_counter()   # the budget (--minutes) counts loading the teacher too
    import torch

    from kyara.distill import distill
    from kyara.distill.parallel import init_from_torchrun
    from kyara.errors import KyaraError
    from kyara.image import load_image, load_rgba
    from kyara.poser import pick_device
    from kyara.teacher import load_teacher

    if args.lite_from:
        return add_lite(args)
    if not args.image:
        raise KyaraError("kyara distill needs a character IMAGE (or --lite-from FILE.kyara); see --help")
    if not args.output:
        raise KyaraError("kyara distill IMAGE needs -o/--output OUT.kyara")
    out = Path(args.output)
    if out.suffix.lower() != ".kyara":
        raise KyaraError(f"--output {out}: use a .kyara file name")
    ranks, device_arg = init_from_torchrun(args.device)
    device = pick_device(device_arg)
    config = checked_config(args)   # every option checked before the image and the teacher load
    work = Path(args.work_dir) if args.work_dir else out.with_suffix(".work")
    check_work_dir(work, resume=args.resume, restart=args.restart)
    if config.pose_dataset:
        from kyara.pose_dataset import load_pose_dataset

        load_pose_dataset(config.pose_dataset)   # a bad file fails now, not after the teacher has loaded
    if device.type == "cpu" and ranks.world == 1:
        print("warning: distilling on the CPU takes days; use a CUDA GPU (--device cuda)")
    image = load_image(args.image, fit=args.fit)
    teacher = load_teacher(config.teacher, weights_dir=args.weights, device=str(device))
    png = None
    if Path(args.image).suffix.lower() == ".png" and not args.fit:
        load_rgba(args.image)  # validated above; keep the user's exact bytes
        png = Path(args.image).read_bytes()
    result = distill(image, teacher, config, out_dir=work, name=args.name or Path(args.image).stem,
                     resume=args.resume, mask_path=args.mask, max_minutes=args.minutes,
                     stop_after_minutes=args.stop_after, image_png=png, output=out, started=started)
    if not ranks.is_main:
        return 0
    done = "complete" if result.complete else "stopped early (resume with --resume)"
    metrics = result.character.metadata.get("metrics", {})
    peak, rollbacks = metrics.get("gpu_peak_reserved_gib"), metrics.get("rollbacks", [])
    plan = getattr(result.character.poser, "lite_face_plan", None)
    grid = plan.body_grid if plan is not None else None   # chosen for this student (kyara.student.lite.make_plan)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB): {result.examples:,} examples, {done}, "
          f"held-out PSNR {result.psnr:.2f} dB, {result.wall_seconds / 60:.1f} min "
          f"(teacher {result.teacher_seconds / 60:.1f} min)" + (f", GPU memory peak {peak:.1f} GiB" if peak else "")
          + (f", CPU-lite body grid {grid}²" if grid else "")
          + (f"; {len(rollbacks)} divergence rollback(s): "
             + ", ".join(f"{r['network']} at step {r['step']}" for r in rollbacks) if rollbacks else ""))
    if result.complete and result.psnr < LOW_PSNR_DB and result.examples < SHORT_RUN_EXAMPLES:
        print(f"note: held-out PSNR under {LOW_PSNR_DB:g} dB after {result.examples:,} examples, a short run (a "
              "10-minute run on an H100 trains ~600,000-800,000): train longer (--minutes, or --examples) to raise it")
    elif result.complete and result.psnr < LOW_PSNR_DB:
        print(f"note: held-out PSNR under {LOW_PSNR_DB:g} dB. Drawings full of fine line (long hair, loose strands) come "
              "out lower than others in the same minutes; more --minutes raise it, slowly (twice the minutes gave "
              "+0.6 dB on the sample, +0.4 dB on a long-haired drawing; docs/distill.md, "
              "\"Which drawings come out worse\")")
    del torch
    return 0


def add_lite(args) -> int:
    """`kyara distill --lite-from FILE.kyara [-o OUT.kyara]`: store the lite student's plan."""
    import time

    from kyara.character import store_lite_plan
    from kyara.errors import KyaraError

    source = Path(args.lite_from)
    if args.image:
        raise KyaraError(f"give either an IMAGE to distil or --lite-from FILE.kyara, not both (got {args.image})")
    out = Path(args.output) if args.output else source
    for option, path in (("--lite-from", source), ("--output", out)):
        if path.suffix.lower() != ".kyara":
            raise KyaraError(f"{option} {path}: expected a .kyara file (a distilled character)")
    start = time.perf_counter()
    plan, written = store_lite_plan(source, out)
    grid = (f"body grid {plan.body_grid}²" if plan.body_grid is not None else
            "body grid 128² (the file has no held-out PSNR to choose one by)")
    if not written:
        print(f"{source}: already carries a lite plan for its weights ({plan.share:.1%} of the face box "
              f"movable, {grid}); unchanged")
        return 0
    print(f"wrote {out}: lite plan stored ({plan.share:.1%} of the face box movable, {grid}, "
          f"{time.perf_counter() - start:.1f} s, {out.stat().st_size / 2**20:.2f} MiB); "
          f"`--student lite` now starts without the analysis")
    return 0
