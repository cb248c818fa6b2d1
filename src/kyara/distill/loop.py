"""distill(): teach a per-character Student to mimic a teacher, in one readable loop.

Order (nanoGPT style): setup → teacher data pool → mask → student + optimizers → loop
(pool refresh, learning rates, one TrainStep: sample batch, face loss, body loss, updates; eval, checkpoint)
→ save the .kyara file. The step itself is kyara.distill.step (shared with benchmarks/distill_step.py), the
teacher pool kyara.distill.pool, the checkpoint and the log kyara.distill.checkpoint.

Speed comes from these choices (THA4 takes ~30 h per character):
* teacher outputs are computed in large batches into an on-device pool and each is shown to the
  student `reuse` times on average, so the teacher costs a fraction of the student's time;
* the face and body students train simultaneously from the same teacher batches;
* larger batches with a proportionally larger learning rate than THA4's batch-8 schedule;
* the body morpher is trained only on the canvas the character can reach (its region);
* on CUDA the student's training passes are torch.compile'd (step.TrainForward), and a step never waits
  for the GPU (step.TrainStep), so the CPU queues the next one while the GPU runs this one.
Resume is exact: the pool content and every batch are pure functions of (seed, step).
Under `torchrun` each GPU runs this loop on its own examples and gradients are averaged
(kyara.distill.parallel); the schedule counts examples over all GPUs.
"""
from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import torch

from kyara.character import COLOUR_KEY, Character, save_kyara
from kyara.distill.checkpoint import (CHECKPOINT_NAME, LOG_NAME, donor_weights, drop_log_records_after, load_checkpoint,
                                     load_donor_weights, load_optimizer_state, save_checkpoint)
from kyara.distill.config import DistillConfig, body_phase_at, step_lr
from kyara.distill.ema import WeightAverage
from kyara.distill.guard import DivergenceGuard
from kyara.distill.mask import derive_face_mask, load_face_mask
from kyara.distill.parallel import current_ranks
from kyara.distill.pool import TeacherPool, explained_out_of_memory, seeded_generator
from kyara.distill.step import StepPrecision, TrainStep, optimizers
from kyara.errors import KyaraError
from kyara.image import to_premultiplied
from kyara.pose_dataset import pose_sampler
from kyara.student import BodyMorpher, Student
from kyara.student.body_morpher import levels_for_widths
from kyara.student.lite import make_plan
from kyara.student.pixels import dilate

AUTO_MARK_STEPS = 10     # an auto-sized run (examples=0) times its steps from here: the first steps
                         # compile and warm up CUDA (timing them made 20-minute runs end at 16.5 minutes,
                         # and with torch.compile a 5.5-minute run at 1.7)
AUTO_WARMUP_STEPS = 40   # first sizing of an auto-sized run
AUTO_RESIZE_STEPS = 400  # second sizing, from the longer steady stretch
AUTO_MARGIN_S = 20.0     # final evaluation and file writes
AUTO_OVERHEAD = 1.03     # periodic evaluation (~1 %) and checkpoints
STOP_CHECK_STEPS = 16    # with several ranks, how often they agree on whether the time is up


@contextmanager
def tf32_matmuls(enabled: bool) -> Iterator[None]:
    """PyTorch's global TF32 switches (CUDA matmuls, cuDNN convolutions) set to `enabled` inside the
    block, and put back as they were when it ends, however it ends: distilling changes no global state."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class SetupProgress:
    """The teacher work before the first step (the pool's examples, the held-out targets, the movable-parts
    mask's poses) as one progress bar, and a check that it leaves time to train.

    On a GPU this is seconds; on a CPU the THA3 teacher takes ~1 s a pose, so the default pool (4,096 poses)
    alone takes over an hour: without the bar a CPU run sat silent that long, and a `--minutes` budget could
    not be kept. On a GPU the first batch warms the teacher up (CUDA start-up, kernel selection) and is not
    timed. A CPU has no such start-up (its first batch is ~15 % slower than the next, so the projection errs
    on the safe side), so there the timing starts at once and the check comes one batch sooner (over a minute
    at the default chunk). After CHECK_AFTER_POSES timed poses the rest is projected at their rate, and if the
    setup would take more than half of the time left (deadline: the budget's end; None = no budget, no check)
    the run stops there with a KyaraError that names a --pool-size which would fit.
    """
    CHECK_AFTER_POSES = 32   # one teacher chunk at the default teacher_batch_size

    def __init__(self, total_poses: int, bar, deadline: float | None, name: str, device: torch.device,
                 config: DistillConfig, other_poses: int):
        self.total, self.bar, self.deadline = total_poses, bar, deadline
        self.name, self.device, self.config, self.other_poses = name, device, config, other_poses
        self.done = 0
        self.checked = deadline is None
        # (time, poses done) from which the rate is timed: after the warm-up batch on a GPU, from now on a CPU
        self.mark: tuple[float, int] | None = (time.perf_counter(), 0) if device.type == "cpu" else None

    def update(self, poses: int) -> None:
        self.bar.update(poses)
        self.done += poses
        if self.checked:
            return
        now = time.perf_counter()
        if self.mark is None:
            self.mark = (now, self.done)
        elif self.done - self.mark[1] >= self.CHECK_AFTER_POSES:
            self.checked = True
            rate = (now - self.mark[0]) / (self.done - self.mark[1])   # seconds a teacher pose
            left = self.deadline - now
            if self.done < self.total and rate * (self.total - self.done) > 0.5 * left:
                raise KyaraError(self._too_slow(rate, left))

    def _too_slow(self, rate: float, left: float) -> str:
        c = self.config
        smallest = c.batch_size * c.face_batch_multiplier              # DistillConfig's lower bound
        # a pool whose whole setup takes a quarter of the time left
        fits = int((0.25 * left / rate - self.other_poses) // c.teacher_batch_size) * c.teacher_batch_size
        advice = (f"use a CUDA GPU (--device cuda) or a smaller --pool-size (e.g. {fits})" if fits >= smallest else
                  f"use a CUDA GPU (--device cuda) or a longer --minutes: no --pool-size fits (the smallest, "
                  f"{smallest}, is --batch-size × --face-batch-multiplier)")
        # a slow device can spend the whole budget on the warm-up and the timed batch alone
        budget = (f"more than half of the {left / 60:.1f} min left in the budget" if left > 0 else
                  f"and the first {self.done} poses have already used up the whole budget")
        return (f"distill {self.name}: preparing the run needs {self.total} teacher poses ({c.pool_size} for the "
                f"pool, {self.other_poses} for the mask and the held-out PSNR), ~{rate * self.total / 60:.1f} min on "
                f"{self.device.type} at {rate:.2f} s a pose, {budget}; {advice}")


@torch.no_grad()
def character_region(image: torch.Tensor, teacher_alpha: torch.Tensor, margin_px: int, chunk: int = 256) -> torch.Tensor:
    """(512, 512) bool: pixels visible in the input image or in any teacher output, dilated by margin_px.

    image: (4, 512, 512) model space; teacher_alpha: (K, 512, 512) model-space alpha of K teacher
    outputs (the pool: thousands of poses from the training distribution). The body morpher is
    trained and run only here: elsewhere input and every output are transparent, so it could
    only learn "nothing", and skipping those pixels makes each step 1.5–3× cheaper.
    """
    visible = image[3] > -1.0 + 1e-3
    for s in range(0, teacher_alpha.shape[0], chunk):
        visible |= (teacher_alpha[s:s + chunk] > -0.99).any(0)
    return dilate(visible, margin_px)


@dataclass
class DistillResult:
    """wall_seconds and teacher_seconds are the run's own, summed over its sessions when resumed (each resumed
    session's start, which reloads the teacher and refills the pool, is not counted)."""
    character: Character
    psnr: float
    steps: int
    examples: int
    wall_seconds: float
    teacher_seconds: float
    complete: bool


@torch.no_grad()
def evaluate_psnr(student: Student, image: torch.Tensor, poses: torch.Tensor, targets: torch.Tensor, batch: int = 8) -> float:
    """Mean PSNR (dB) of student vs teacher on held-out poses (kyara.eval.metrics definition)."""
    from kyara.eval.metrics import psnr

    values = []
    for s in range(0, poses.shape[0], batch):
        pred = student(image, poses[s:s + batch]).image
        values.append(psnr(pred.float(), targets[s:s + batch].float()).cpu())
    return float(torch.cat(values).mean())


def distill(image: torch.Tensor, teacher, config: DistillConfig = DistillConfig(), *, out_dir: str | Path,
            name: str = "character", resume: bool = False, mask_path: str | Path | None = None,
            max_minutes: float | None = None, stop_after_minutes: float | None = None, progress: bool = True,
            image_png: bytes | None = None, output: str | Path | None = None,
            student: Student | None = None, started: float | None = None) -> DistillResult:
    """Distill `teacher` into a Student for `image` and write `<out_dir>/<name>.kyara` (or `output`).

    image: (4, 512, 512) float32 model space. teacher: a kyara Teacher (pose_all/prepare).
    Checkpoints go to `<out_dir>/checkpoint.safetensors` every config.checkpoint_every_examples;
    resume=True continues exactly from it. max_minutes is the whole run's time budget (earlier
    resumed sessions included, though not a resumed session's own start before its first step): it
    sizes the schedule when config.examples == 0, and the run stops (after a checkpoint) when it is
    spent, still writing the character file. stop_after_minutes
    ends this invocation early the same way (e.g. a job-time limit) without changing the schedule.
    `student` replaces the architecture config.body_widths describes (default THA4's), e.g. for tiny
    test models. Under torchrun (an initialised process group) every rank calls this; rank 0 writes.
    started: the time.perf_counter() from which this session's minutes count (default: this call);
    the CLI passes its own start, so loading the teacher counts towards the budget too.
    config.tf32 holds for the call only (``tf32_matmuls``); the caller's TF32 settings come back after.
    """
    from tqdm import tqdm

    t_start = time.perf_counter() if started is None else started
    ranks = current_ranks()
    progress = progress and ranks.is_main
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / CHECKPOINT_NAME
    device = teacher.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)    # the metrics' peak is this run's (a farm worker runs many)
    with tf32_matmuls(config.tf32), explained_out_of_memory(lambda: config, device):
        # -- resume: the checkpoint's config wins, so a resumed run is the same run -------------------
        start_step, ckpt_tensors, ckpt_meta, elapsed_before, teacher_before = 0, None, None, 0.0, 0.0
        if resume:
            if not ckpt_path.exists():
                raise KyaraError(f"--resume: no checkpoint at {ckpt_path}")
            ckpt_tensors, ckpt_meta = load_checkpoint(ckpt_path)
            config = DistillConfig.from_json(ckpt_meta["config"])
            start_step = int(ckpt_meta["step"])
            elapsed_before = float(ckpt_meta.get("elapsed_s", 0))
            teacher_before = float(ckpt_meta.get("teacher_s", 0))     # absent before session 26: 0
            drop_log_records_after(out_dir / LOG_NAME, start_step)

        if config.examples == 0 and not max_minutes:
            raise KyaraError("examples=0 (auto) needs a time budget (max_minutes / --minutes)")
        # examples == 0: size the run to the time budget after AUTO_WARMUP_STEPS steps (phase 1 meanwhile);
        # the resolved count is stored in the checkpoint's config, so resume stays exact.
        per_step = config.batch_size * ranks.world      # examples per optimizer step, all ranks
        steps_total = math.ceil(config.examples / per_step) if config.examples else 10**9
        image = image.to(device=device, dtype=torch.float32)
        # The student learns in the teacher's colour convention (THA4: premultiplied, as the official
        # distiller); the stored image stays straight and the .kyara metadata records the convention.
        colour = getattr(teacher, "colour", "straight")
        # a warm start's weights are read before any teacher work, so a bad file fails in a second
        initial_weights = donor_weights(config, colour) if config.init_from and ckpt_tensors is None else None
        stored_image = image.cpu()
        if colour == "premultiplied":
            image = to_premultiplied(image)
        prepared = teacher.prepare(image)
        sampler = pose_sampler(config.pose_dataset)

        # -- teacher data --------------------------------------------------------------------------
        pool = TeacherPool(teacher, prepared, config.pool_size, config.teacher_batch_size, config.seed, device,
                           stream=ranks.stream_key(), sampler=sampler)
        # reuse counts showings of a teacher example's pixels: a step on a part of them (body_pixel_fraction
        # < 1) shows 1/K of its pixels, so the example stays K times as many steps; else cheaper steps would
        # make the teacher, not the student, the bottleneck
        parts_k = max(1, round(1 / config.body_pixel_fraction))
        refresh_steps = max(1, round(config.teacher_batch_size * config.reuse * parts_k / config.batch_size))
        initial_chunks = pool.num_slots
        first_chunks = initial_chunks + start_step // refresh_steps
        derive_mask = ckpt_tensors is None and mask_path is None
        other_poses = (config.eval_poses if ranks.is_main else 0) + (config.mask_poses + 1 if derive_mask else 0)
        def run_clock(t_run: float) -> tuple[float | None, float | None]:
            """(deadline, stop_at) for a run whose minutes go on from t_run: the budget covers earlier sessions
            of a resumed run; stop_after only ends this session, counted from its very start (a job-time limit)."""
            end = t_run + max_minutes * 60 - elapsed_before if max_minutes else None
            own = t_start + stop_after_minutes * 60 if stop_after_minutes is not None else None
            stops = [t for t in (end, own) if t is not None]
            return end, (min(stops) if stops else None)

        deadline, _ = run_clock(t_start)
        setup_bar = tqdm(total=pool.chunks_to_make(first_chunks) * pool.chunk + other_poses, disable=not progress,
                         unit="pose", dynamic_ncols=True, desc=f"prepare {name} (teacher)")
        # the budget check is for a new run on one device: a resumed run has its budget's remainder to finish in
        # (it stops after a step and still writes its file), and ranks could disagree on the projection
        setup = SetupProgress(setup_bar.total, setup_bar, deadline if ranks.world == 1 and start_step == 0 else None,
                              name, device, config, other_poses)
        pool.advance_to(first_chunks, on_chunk=setup.update)
        eval_poses = sampler(config.eval_poses, seeded_generator(config.seed, 2)).to(device)
        eval_targets = None
        if ranks.is_main:
            with torch.no_grad():
                eval_targets = []
                for s in range(0, len(eval_poses), 8):
                    eval_targets.append(teacher.pose(prepared, eval_poses[s:s + 8]))
                    setup.update(len(eval_targets[-1]))
                eval_targets = torch.cat(eval_targets)

        # -- character region: where any pose can put visible pixels ------------------------------------
        region = None
        if ckpt_tensors is not None and "region" in ckpt_tensors:
            region = ckpt_tensors["region"].to(device).bool()
        elif config.region:
            region = ranks.union(character_region(image, pool.final[:pool.size, 3], config.region_margin_px))

        # -- movable-parts mask -----------------------------------------------------------------------
        if ckpt_tensors is not None:
            mask = ckpt_tensors["mask"].to(device)
        elif mask_path is not None:
            mask = load_face_mask(mask_path, device)
        else:
            mask = derive_face_mask(teacher, prepared, config.mask_poses, seeded_generator(config.seed, 3),
                                    on_poses=setup.update)
        setup_bar.close()

        # -- student and optimizers -----------------------------------------------------------------
        torch.manual_seed(config.seed)
        if student is None:
            student = Student(body_morpher=BodyMorpher(levels_for_widths(config.body_widths)))
        student = student.to(device)
        student.set_region(region)
        if initial_weights is not None:
            load_donor_weights(student, initial_weights, config.init_from)
        elif config.identity_init and ckpt_tensors is None:
            # THA4 He-initialises the head, so training starts from random flows far from any teacher
            # output; a zero head starts at the identity warp (output = input) and learns the change.
            torch.nn.init.zeros_(student.body_morpher.last_linear.weight)
            torch.nn.init.zeros_(student.body_morpher.last_linear.bias)
        face_opt, body_opt = optimizers(student, config, device)
        if ckpt_tensors is not None:
            student.load_state_dict({k[len("student."):]: v for k, v in ckpt_tensors.items() if k.startswith("student.")})
            load_optimizer_state("face_opt", face_opt, ckpt_tensors, json.loads(ckpt_meta["face_opt"]), device)
            load_optimizer_state("body_opt", body_opt, ckpt_tensors, json.loads(ckpt_meta["body_opt"]), device)

        # the weights' moving average (config.ema_decay): resumed with the run, written as the result
        average = None
        if config.ema_decay:
            average = WeightAverage(student.named_parameters(), config.ema_decay, updates=start_step)
            if ckpt_tensors is not None:
                average.load(ckpt_tensors)
        # a network whose loss blows up goes back to its last healthy weights at half the rate (guard.py)
        guard = None
        if config.divergence_check_steps:
            saved = json.loads(ckpt_meta["guard"]) if ckpt_meta is not None and "guard" in ckpt_meta else {}
            guard = DivergenceGuard(
                {name: (list(net.parameters()), opt,
                        [a for n, a in zip(average.names, average.average) if n.startswith(prefix)] if average else [])
                 for name, net, opt, prefix in (("face", student.face_morpher, face_opt, "face_morpher."),
                                                ("body", student.body_morpher, body_opt, "body_morpher."))},
                config.divergence_check_steps, lr_factors=saved.get("lr_factors"), best=saved.get("best"),
                rollbacks=saved.get("rollbacks"))
        precision = StepPrecision(config.amp, device, json.loads(ckpt_meta["loss_scales"])
                                  if ckpt_meta is not None and "loss_scales" in ckpt_meta else None)
        # pixel fractions < 1: a network trains on one random part of its pixels per step (PixelParts)
        train_step = TrainStep(student, image, mask, config, face_opt, body_opt, ranks=ranks, precision=precision)
        ckpt_every_steps = max(1, config.checkpoint_every_examples // per_step)
        log_path = out_dir / LOG_NAME
        last_eval, psnr_value = time.perf_counter(), float("nan")

        def log(record: dict) -> None:
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

        loop_start = time.perf_counter()
        # A resumed session's own start (teacher, pool, held-out targets and compiling its step, once more) is the
        # interruption's cost, not the run's: the run's minutes go on after the session's first step, so a run cut
        # off at minute 8 of 10 finishes its plan when resumed with the same --minutes. A new run's start is
        # charged (its plan is sized to what is left after it).
        t_run, teacher_at_run = t_start, 0.0
        deadline, stop_at = run_clock(t_run)

        def run_teacher_s() -> float:
            """The teacher's seconds within the run's minutes (not the resumed session's pool refill)."""
            return teacher_before + pool.teacher_seconds - teacher_at_run

        auto_size = config.examples == 0
        warm_mark = (loop_start, start_step)
        bar = tqdm(total=steps_total if config.examples else None, initial=start_step, disable=not progress,
                   unit="step", dynamic_ncols=True, desc=f"distill {name}")
        step = start_step
        stopped_early = False
        while step < steps_total:
            if step % refresh_steps == 0 and step > 0:
                pool.advance_to(initial_chunks + step // refresh_steps)
            fraction = step / steps_total
            body_phase = body_phase_at(config, fraction)
            for network, opt, phases in (("face", face_opt, config.face_phases), ("body", body_opt, config.body_phases)):
                for group in opt.param_groups:
                    group["lr"] = step_lr(phases, config, step, steps_total, network) * (guard.lr_factor(network) if guard else 1.0)
            g = seeded_generator(config.seed, 4, step, *ranks.stream_key())

            losses = train_step(pool, g, body_phase)
            if average is not None:
                average.update()
            step += 1
            bar.update(1)
            if step == start_step + 1 and start_step > 0:
                t_run, teacher_at_run = time.perf_counter(), pool.teacher_seconds
                deadline, stop_at = run_clock(t_run)
            if guard is not None:
                # the body's unweighted blended-image term: its total loss jumps with each phase's weights
                guard.add({"face": losses.face, "body": losses.terms["blended"]})
                if guard.due(step):
                    for rollback in guard.check(step, decide=lambda mask: ranks.broadcast_int(mask, device)):
                        if ranks.is_main:
                            log({"event": "rollback", **rollback.__dict__})
                            bar.write(f"distill {name}: the {rollback.network} morpher diverged at step {step} (mean loss "
                                      f"{rollback.loss:.4g}, best {rollback.best:.4g}): back to its weights of step "
                                      f"{rollback.restored_step}, its learning rate now × {rollback.lr_factor:g}")
            # sizing times the steps after AUTO_MARK_STEPS (the first ones compile and warm up CUDA);
            # re-sizing at AUTO_RESIZE_STEPS only before the first checkpoint, so resume stays exact
            if auto_size and step in (AUTO_MARK_STEPS, AUTO_WARMUP_STEPS, AUTO_RESIZE_STEPS):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                now = time.perf_counter()
                if step == AUTO_MARK_STEPS:
                    warm_mark = (now, step)
            if auto_size and (step == AUTO_WARMUP_STEPS or (step == AUTO_RESIZE_STEPS and step < ckpt_every_steps)):
                step_s = (now - warm_mark[0]) / (step - warm_mark[1])
                remaining = deadline - now - AUTO_MARGIN_S
                steps_total = max(step + 1, step + int(remaining / (step_s * AUTO_OVERHEAD)))
                steps_total = ranks.broadcast_int(steps_total, device)
                config = replace(config, examples=steps_total * per_step)
                bar.total = steps_total

            now = time.perf_counter()
            # under torchrun the ranks agree on stopping through an all-reduce read back to the CPU, a GPU sync:
            # every STOP_CHECK_STEPS steps only (all ranks are at the same step, so they check together)
            out_of_time = ((ranks.world == 1 or step % STOP_CHECK_STEPS == 0 or step == steps_total)
                           and ranks.any(stop_at is not None and now > stop_at, device))
            if ranks.is_main and (now - last_eval > config.eval_every_s or step == steps_total or out_of_time):
                with average.applied() if average is not None else nullcontext():
                    psnr_value = evaluate_psnr(student, image, eval_poses, eval_targets)
                last_eval = time.perf_counter()
                values = {"loss_face": float(losses.face), "loss_body": float(losses.body)}
                # planned_examples: the schedule's length (0 until an auto-sized run is sized, early), so that a
                # reader of a cut-off run's log knows where in the plan it stopped
                log({"step": step, "examples": step * per_step, "planned_examples": config.examples,
                     "minutes": (elapsed_before + now - t_run) / 60, "psnr": psnr_value, **values, **{k: float(v) for k, v in losses.terms.items()},
                     "teacher_s": run_teacher_s()})
                # only here: reading a loss forces a GPU sync, which would stall every step
                bar.set_postfix(psnr=f"{psnr_value:.2f}dB", face=f"{values['loss_face']:.4f}",
                                body=f"{values['loss_body']:.4f}", refresh=False)
            if ranks.is_main and (step % ckpt_every_steps == 0 or step == steps_total or out_of_time):
                save_checkpoint(ckpt_path, student, face_opt, body_opt, step, config, mask,
                                elapsed_before + time.perf_counter() - t_run, region, precision.scales(), average, guard,
                                teacher_s=run_teacher_s())
            if out_of_time and step < steps_total:
                stopped_early = True
                break
        bar.close()

        wall = elapsed_before + time.perf_counter() - t_run
        if average is not None:
            average.copy_to_weights()    # the result is the average (psnr_value was measured on it)
        student.eval()
        metadata = {"distill": json.loads(config.to_json()), "metrics": {
            "heldout_psnr_db": psnr_value, "heldout_poses": config.eval_poses, "steps": step,
            "examples": step * per_step, "complete": not stopped_early, "wall_seconds": round(wall, 1),
            "teacher_seconds": round(run_teacher_s(), 1), "gpus": ranks.world,
            "region_fraction": round(float(region.float().mean()), 4) if region is not None else 1.0}}
        if guard is not None and guard.rollbacks:
            metadata["metrics"]["rollbacks"] = [r.__dict__ for r in guard.rollbacks]
        if device.type == "cuda":
            # what this process held at its peak (the caching allocator's reservation is what other jobs on the
            # GPU cannot use): sizes `kyara farm --jobs-per-gpu` and `--pool-size` for a GPU's memory
            gib = 2 ** 30
            metadata["metrics"]["gpu_peak_allocated_gib"] = round(torch.cuda.max_memory_allocated(device) / gib, 3)
            metadata["metrics"]["gpu_peak_reserved_gib"] = round(torch.cuda.max_memory_reserved(device) / gib, 3)
        if colour != "straight":
            metadata[COLOUR_KEY] = colour
        character = Character(name, stored_image, student, teacher.name, metadata)
        if ranks.is_main:
            # The CPU-lite student's plan (48 face evaluations; its body grid from 16 poses against the full
            # student): stored with the student, so that `--student lite|auto` starts without the analysis.
            # The lite student needs no training.
            student.lite_face_plan = make_plan(student, image, psnr_value)
            out_path = Path(output) if output else out_dir / f"{name}.kyara"
            save_kyara(out_path, name, stored_image, student, teacher.name, metadata, image_png=image_png)
        ranks.barrier()
        return DistillResult(character, psnr_value, step, step * per_step, wall, run_teacher_s(),
                             not stopped_early)
