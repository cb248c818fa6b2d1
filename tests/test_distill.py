"""Distillation machinery on CPU with a cheap analytic teacher (tests/fakes.py).

The real THA3 teacher takes ~1 s per frame on this CPU, so these tests check the loop's
mechanics (loss falls, exact resume, file output, errors); the real runs are GPU benchmarks.
"""
import dataclasses
import json
import math
import time

import pytest
import torch

from kyara.distill import DistillConfig, distill
from kyara.distill.checkpoint import CHECKPOINT_NAME, LOG_NAME
from kyara.pose_sampler import sample_poses
from kyara.errors import KyaraError
from kyara.pose import HIGH, LOW
from kyara.student import BodyMorpher, FaceMorpher, Student
from tests.fakes import FakeTeacher

# Every pixel (the exact loss) unless a test asks for parts: the tests below compare the two. One rate for both
# networks and no weight average unless a test turns them on (test_ema, test_warm_start): then a test's written
# weights are its last step's, and its rates its schedule's × lr_scale.
TINY = DistillConfig(teacher="fake", examples=4, batch_size=1, face_batch_multiplier=1, teacher_batch_size=1,
                     pool_size=1, reuse=1000.0, eval_poses=1, eval_every_s=0.0, checkpoint_every_examples=2,
                     mask_poses=2, lr_scale=10.0, face_lr_scale=0.0, ema_decay=0.0,
                     body_pixel_fraction=1.0, face_pixel_fraction=1.0)


def _image():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(4, 512, 512, generator=g) * 2 - 1
    image[3, :, :100] = -1  # some transparent area
    return image


def _tiny_student():
    """Same structure as the official student, narrow enough to train in seconds on a CPU."""
    torch.manual_seed(0)
    return Student(FaceMorpher(hidden=16, num_layers=3), BodyMorpher(levels=((128, 16, 8), (256, 8, 8), (512, 8, 8))))


def _log(path):
    return [json.loads(line) for line in (path / LOG_NAME).read_text().splitlines()]


@pytest.fixture
def bit_exact_torch():
    """One intra-op thread and deterministic kernels for one test, restored afterwards. Tests that compare
    two runs for bit equality need this: with 2 threads, two identical straight runs differed by ~1e-10
    (the threads split the reductions differently from run to run)."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)


def test_pose_sampler_covers_ranges_and_is_deterministic():
    a = sample_poses(2000, torch.Generator().manual_seed(1))
    b = sample_poses(2000, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert (a >= torch.from_numpy(LOW)).all() and (a <= torch.from_numpy(HIGH)).all()
    # every parameter is exercised near both ends of its range
    assert (a.max(0).values > torch.from_numpy(HIGH) - 0.1).all()
    assert (a.min(0).values < torch.from_numpy(LOW) + 0.1).all()


@pytest.mark.parametrize("parts", [False, True], ids=["every pixel", "pixel parts"])
def test_tiny_distillation_loss_falls_and_resume_is_exact(tmp_path, bit_exact_torch, parts):
    """Also with body/face_pixel_fraction < 1 (issue 16: cheaper steps), where each network trains on one
    random part of its pixels per step: the losses still fall, and resume replays the same parts."""
    from dataclasses import replace

    config = replace(TINY, body_pixel_fraction=0.5, face_pixel_fraction=0.5) if parts else TINY
    teacher = FakeTeacher()
    straight = distill(_image(), teacher, config, out_dir=tmp_path / "a", name="tiny", progress=False,
                       student=_tiny_student())
    log = _log(tmp_path / "a")
    # phase weights change along the schedule, so compare unweighted terms
    assert log[-1]["blended"] < log[0]["blended"]
    assert log[-1]["loss_face"] < log[0]["loss_face"]
    assert straight.steps == 4

    # stop after 2 steps (simulated by a 2-example run with the same schedule length), then resume
    half = tmp_path / "b"
    distill(_image(), teacher, config, out_dir=half, name="tiny", progress=False, max_minutes=1e-9,
            student=_tiny_student())
    resumed = distill(_image(), teacher, config, out_dir=half, name="tiny", progress=False, resume=True,
                      student=_tiny_student())
    assert resumed.steps == 4
    for (k, x), (_, y) in zip(straight.character.poser.state_dict().items(),
                              resumed.character.poser.state_dict().items()):
        assert torch.equal(x, y), f"resume diverged at {k}"

    assert (tmp_path / "a" / "tiny.kyara").exists() and (tmp_path / "a" / CHECKPOINT_NAME).exists()
    # the body morpher was restricted to the character's region, and the region travels with the file
    region = straight.character.poser.region
    assert region is not None and torch.equal(resumed.character.poser.region, region)
    from safetensors.torch import load_file
    packed = load_file(str(tmp_path / "a" / "tiny.kyara"))["body_region"]   # (tiny networks: no load_character)
    unpacked = torch.from_numpy(__import__("numpy").unpackbits(packed.numpy()).reshape(512, 512).astype(bool))
    assert torch.equal(unpacked, region.cpu())
    # ... and so does the CPU-lite student's face plan, made for these face weights
    from safetensors import safe_open

    from kyara.student.lite import FACE_CONSTANT_KEY, FACE_MASK_KEY, PLAN_META_KEY, face_weights_sha256
    with safe_open(str(tmp_path / "a" / "tiny.kyara"), "pt") as f:
        assert {FACE_MASK_KEY, FACE_CONSTANT_KEY} <= set(f.keys())
        plan_meta = json.loads(f.metadata()[PLAN_META_KEY])
    assert plan_meta["face_weights_sha256"] == face_weights_sha256(straight.character.poser)
    # with the body grid chosen from the run's held-out PSNR (a tiny student far from its teacher: the first)
    assert straight.psnr == straight.psnr and plan_meta["body_grid"] == 128
    if parts:   # and training on parts is another run than training on every pixel
        full = distill(_image(), teacher, TINY, out_dir=tmp_path / "c", name="tiny", progress=False,
                       student=_tiny_student())
        assert not torch.equal(full.character.poser.body_morpher.last_linear.weight,
                               straight.character.poser.body_morpher.last_linear.weight)


def test_reuse_counts_pixels_so_parts_keep_an_example_longer(tmp_path):
    """With body_pixel_fraction 1/K each step shows 1/K of an example's pixels, so the pool refreshes K times
    less often: the teacher's share of the run does not grow as the steps get cheaper."""
    from dataclasses import replace

    class CountingTeacher(FakeTeacher):
        poses = 0

        def pose_all(self, prepared, poses):
            CountingTeacher.poses += poses.shape[0]
            return super().pose_all(prepared, poses)

    config = replace(TINY, examples=8, reuse=1.0)
    counts = []
    for fraction in (1.0, 0.5):
        CountingTeacher.poses = 0
        distill(_image(), CountingTeacher(), replace(config, body_pixel_fraction=fraction), out_dir=tmp_path / str(fraction),
                name="tiny", progress=False, student=_tiny_student())
        counts.append(CountingTeacher.poses)
    assert counts[0] - counts[1] == 4   # 8 one-pose refreshes (one a step) → 4 (one every second step)


def test_character_region_covers_input_and_outputs_plus_margin():
    from kyara.distill.loop import character_region

    image = torch.full((4, 512, 512), -1.0)
    image[3, 100:110, 200:210] = 1.0                  # visible in the input
    alpha = torch.full((3, 512, 512), -1.0)
    alpha[1, 300, 50] = 0.5                           # visible in one teacher output only
    region = character_region(image, alpha, margin_px=4)
    assert region[96, 196] and region[113, 213] and not region[95, 200] and not region[100, 214]
    assert region[296, 46] and region[304, 54] and not region[305, 50]
    assert int(region.sum()) == 18 * 18 + 9 * 9


def test_running_out_of_gpu_memory_is_a_one_line_error_with_advice(tmp_path, monkeypatch, capsys):
    """torch's out-of-memory error (here raised where the pool is allocated, as on a 16-24 GB GPU at the
    default --pool-size) becomes a DeviceMemoryError naming the pool's size and what to lower."""
    import kyara.distill.loop as loop
    import kyara.distill.pool as pool
    from kyara.errors import DeviceMemoryError

    def no_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 12.00 GiB")

    monkeypatch.setattr(loop, "TeacherPool", no_memory)
    with pytest.raises(DeviceMemoryError) as caught:
        distill(_image(), FakeTeacher(), TINY, out_dir=tmp_path, name="tiny", progress=False, student=_tiny_student())
    message = str(caught.value)
    assert "\n" not in message and "ran out of memory while distilling" in message
    # TINY's pool: 1 example of 3.3 MiB; the default pool of 4096 is 13.1 GiB
    assert f"--pool-size {TINY.pool_size}" in message and "3.3 MiB an example" in message
    assert isinstance(caught.value.__cause__, torch.cuda.OutOfMemoryError)
    assert pool.POOL_BYTES_PER_EXAMPLE == (6 * 512 * 512 + 4 * 192 * 192) * 2
    assert "holds 13.1 GiB (--pool-size 4096" in pool.out_of_memory_message(DistillConfig(), torch.device("cpu"))
    # On a 24 GiB GPU the advice is the pool that fits beside the measured rest (19.4 GiB), in teacher batches
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (5 * 2**30, 24 * 2**30))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "Some GPU")
    advice = pool.out_of_memory_message(DistillConfig(), torch.device("cuda", 0))
    fit = int((0.95 * 24 * 2**30 - pool.NON_POOL_BYTES) / pool.POOL_BYTES_PER_EXAMPLE) // 32 * 32
    assert fit == 1056 and f"Try --pool-size {fit} (3.4 GiB)" in advice
    assert advice.startswith("Some GPU (24.0 GiB, 5.0 GiB free now) ran out of memory")
    # On a 16 GiB GPU no pool fits beside the default batches: the advice says so
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (1 * 2**30, 16 * 2**30))
    assert "a smaller --batch-size" in pool.out_of_memory_message(DistillConfig(), torch.device("cuda", 0))


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(KyaraError, match="no checkpoint"):
        distill(_image(), FakeTeacher(), TINY, out_dir=tmp_path, resume=True, progress=False)


def test_train_forward_is_the_students_forward_region_or_not():
    """The training loop's forward (TrainForward, uncompiled here; compiled on CUDA) computes exactly
    what the student computes at inference, with and without a region."""
    from kyara.distill.step import TrainForward

    student = _tiny_student()
    student.body_morpher.last_linear.weight.data.normal_(0, 0.3)   # non-trivial flow, alpha and colour
    poses = sample_poses(2, torch.Generator().manual_seed(3))
    image = _image().unsqueeze(0).expand(2, -1, -1, -1)
    region = torch.zeros(512, 512, dtype=torch.bool)
    region[100:300, 150:400] = True
    for r in (None, region):
        student.set_region(r)
        forward = TrainForward(student)
        expected = student.body_outputs(image, poses)
        got = forward.body(image, poses)
        for name in expected._fields:
            torch.testing.assert_close(getattr(got, name), getattr(expected, name))
        torch.testing.assert_close(forward.face(poses[:, :39]), student.face_morpher(poses[:, :39]))
        if r is not None:   # outside the region: the input, unchanged
            torch.testing.assert_close(got.image[:, :, 0:100], image[:, :, 0:100], atol=1e-4, rtol=0)  # grid_sample at pixel centres


def test_blended_l2_adds_a_weighted_squared_error():
    from kyara.distill.config import Phase
    from kyara.distill.losses import body_loss
    from kyara.student import BodyMorpherOutput

    g = torch.Generator().manual_seed(0)
    t = lambda c: torch.rand(2, c, 512, 512, generator=g) * 2 - 1   # noqa: E731
    out = BodyMorpherOutput(t(4), t(1), t(4), t(4), t(2) * 0.1)
    target, warped, flow = t(4), t(4), t(2) * 0.1
    phase = Phase(1.0, 1e-4, w_blended=10.0, w_warped=1.0, w_flow=1.0, w_color=1.0)
    base, terms = body_loss(out, target, warped, flow, phase)
    with_l2, terms2 = body_loss(out, target, warped, flow, phase, blended_l2=5.0)
    mse = (out.image - target).square().mean()
    torch.testing.assert_close(terms["blended_mse"], mse)
    torch.testing.assert_close(with_l2 - base, 10.0 * 5.0 * mse)


def test_config_validation():
    with pytest.raises(ValueError, match="blended_l2"):
        DistillConfig(blended_l2=-1.0)
    with pytest.raises(ValueError, match="batch_size"):
        DistillConfig(batch_size=0)
    cfg = DistillConfig(examples=123)
    assert DistillConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        DistillConfig.from_json('{"bogus": 1}')


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str, queue) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        config = DistillConfig(**{**json.loads(TINY.to_json()), "examples": 8, "body_phases": TINY.body_phases,
                                  "face_phases": TINY.face_phases})
        result = distill(_image(), FakeTeacher(), config, out_dir=out_dir, name="tiny", progress=False,
                         student=_tiny_student())
        from safetensors.torch import save_file

        # tensors cannot outlive a spawned process through a queue: hand them over as a file
        save_file({k: v.contiguous() for k, v in result.character.poser.state_dict().items()},
                  f"{out_dir}/rank{rank}.safetensors")
        queue.put((rank, result.steps))
    finally:
        dist.destroy_process_group()


def test_data_parallel_two_ranks_stay_identical_and_split_the_examples(tmp_path):
    """Two Gloo ranks (what torchrun starts on two GPUs): each sees its own examples, the averaged
    gradients keep the replicas bit-identical, and the schedule's examples are shared out."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, str(tmp_path / "init"), str(tmp_path / "out"), queue))
             for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=240) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    from safetensors.torch import load_file

    (_, steps0), (_, steps1) = results
    w0, w1 = (load_file(str(tmp_path / "out" / f"rank{r}.safetensors")) for r in range(2))
    assert steps0 == steps1 == 4            # 8 examples / (batch 1 × 2 ranks)
    for k in w0:
        assert torch.equal(w0[k], w1[k]), f"replicas diverged at {k}"
    # the replicas trained (not equal to a fresh init) and rank 0 wrote the file and log
    fresh = _tiny_student().state_dict()
    assert any(not torch.equal(w0[k], fresh[k]) for k in w0)
    log = _log(tmp_path / "out")
    assert log[-1]["examples"] == 8
    assert (tmp_path / "out" / "tiny.kyara").exists()


def test_stop_after_ends_the_session_and_resume_finishes_the_same_schedule(tmp_path):
    teacher = FakeTeacher()
    first = distill(_image(), teacher, TINY, out_dir=tmp_path, name="tiny", progress=False,
                    stop_after_minutes=1e-9, student=_tiny_student())
    assert not first.complete and first.steps == 1
    # a run killed between checkpoints had logged steps past its checkpoint (and maybe half a line):
    # the resumed run replays them, and its log keeps each step once
    with open(tmp_path / "log.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": first.steps + 1, "stale": True}) + "\n" + '{"step": 3, "exa')
    done = distill(_image(), teacher, TINY, out_dir=tmp_path, name="tiny", progress=False, resume=True,
                   student=_tiny_student())
    assert done.complete and done.steps == 4
    log = _log(tmp_path)
    assert not any(r.get("stale") for r in log)
    steps = [r["step"] for r in log if "event" not in r]
    assert steps == sorted(set(steps)) and steps[-1] == 4


def _fake_time(monkeypatch, clock) -> None:
    """Every module that reads the clock during a run (the loop; the pool, which times its teacher chunks) reads
    `clock` (anything with perf_counter())."""
    import kyara.distill.loop
    import kyara.distill.pool

    for module in (kyara.distill.loop, kyara.distill.pool):
        monkeypatch.setattr(module, "time", clock)


class _FakeClock:
    """Stands in for the loop's `time` module: perf_counter runs `offset` seconds ahead of the real clock, so a
    test can make a teacher or a start take minutes in no time."""
    offset = 0.0

    def perf_counter(self):
        return time.perf_counter() + self.offset

    def __getattr__(self, name):
        return getattr(time, name)


def test_a_resumed_sessions_own_start_is_not_charged_to_the_budget(tmp_path, monkeypatch):
    """A run cut off mid-plan (a lost machine) and resumed with the same budget finishes its plan, however
    long the resumed session takes to load its teacher and refill its pool; the minutes it reports are
    its own. The clock is faked: the resumed start takes ten minutes of it."""
    from kyara.distill.checkpoint import load_checkpoint

    first = distill(_image(), FakeTeacher(), TINY, out_dir=tmp_path, name="tiny", progress=False, max_minutes=10,
                    stop_after_minutes=1e-9, student=_tiny_student())
    assert not first.complete and first.steps == 1
    used_s = float(load_checkpoint(tmp_path / CHECKPOINT_NAME)[1]["elapsed_s"])

    clock = _FakeClock()

    class SlowStart(FakeTeacher):
        def prepare(self, image):
            clock.offset += 600.0
            return super().prepare(image)

    _fake_time(monkeypatch, clock)
    # five minutes of budget left: the ten-minute start alone would spend them under the old rule
    done = distill(_image(), SlowStart(), TINY, out_dir=tmp_path, name="tiny", progress=False, resume=True,
                   max_minutes=used_s / 60 + 5, student=_tiny_student())
    assert done.complete and done.steps == 4
    assert done.wall_seconds < 300


def test_a_resumed_runs_teacher_time_is_its_own_over_its_sessions(tmp_path, monkeypatch):
    """The teacher time a resumed run reports is its sessions' teacher time within the run's minutes: the first
    session's (from its checkpoint) plus the resumed one's after its first step, not the pool refill of the
    resumed start (session 26 reported 1.5 min of teacher for a 19.2-minute run that had spent ~2.4). A fake
    clock makes every teacher chunk take 7 s in the first session and 50 s in the resumed one."""
    from dataclasses import replace

    from kyara.distill.checkpoint import load_checkpoint

    clock = _FakeClock()

    class SlowTeacher(FakeTeacher):
        def __init__(self, chunk_s):
            self.chunk_s = chunk_s

        def pose_all(self, prepared, poses):
            if poses.shape[0] == 1:        # a pool chunk (teacher_batch_size 1); eval and mask poses come in more
                clock.offset += self.chunk_s
            return super().pose_all(prepared, poses)

    _fake_time(monkeypatch, clock)
    config = replace(TINY, reuse=1.0, eval_poses=2)     # a new pool chunk every step; the eval batch is not a chunk
    first = distill(_image(), SlowTeacher(7.0), config, out_dir=tmp_path, name="tiny", progress=False,
                    max_minutes=10, stop_after_minutes=1e-9, student=_tiny_student())
    assert first.steps == 1
    first_teacher_s = float(load_checkpoint(tmp_path / CHECKPOINT_NAME)[1]["teacher_s"])
    assert 7.0 <= first_teacher_s < 7.0 + 5.0        # one chunk; 5 s: real time on a slow CI machine
    done = distill(_image(), SlowTeacher(50.0), config, out_dir=tmp_path, name="tiny", progress=False, resume=True,
                   max_minutes=10, student=_tiny_student())
    assert done.complete and done.steps == 4
    # steps 2 and 3 each start with a new chunk (2 × 50 s); the refill before step 2 is the start's, not counted
    assert first_teacher_s + 100.0 <= done.teacher_seconds < first_teacher_s + 100.0 + 10.0
    assert done.teacher_seconds <= done.wall_seconds


@pytest.mark.parametrize("device, checked_after", [("cpu", 32), ("cuda", 64)])
def test_setup_check_times_a_cpu_from_its_first_batch_and_a_gpu_after_its_warm_up(monkeypatch, device, checked_after):
    """On a GPU the first chunk of 32 poses warms CUDA up and is not timed, so the budget check comes after the
    second; a CPU has no such start-up, so its check comes after the first (a CPU user's doomed run says so over a
    minute sooner). A fake clock of 2 s a pose and a 1-minute budget: the setup cannot fit either way."""
    import types

    from kyara.distill.loop import SetupProgress

    clock = types.SimpleNamespace(now=0.0)
    _fake_time(monkeypatch, types.SimpleNamespace(perf_counter=lambda: clock.now))
    bar = types.SimpleNamespace(update=lambda n: None)
    setup = SetupProgress(4193, bar, deadline=60.0, name="tiny", device=torch.device(device), config=TINY,
                          other_poses=97)
    done = 0
    with pytest.raises(KyaraError, match="preparing the run needs 4193 teacher poses"):
        while done < 4193:
            clock.now += 2.0 * 32     # one chunk of 32 poses at 2 s a pose
            done += 32
            setup.update(32)
    assert done == checked_after


def test_setup_that_cannot_leave_time_to_train_stops_at_once_naming_a_pool_size(tmp_path, monkeypatch):
    """A CPU user's `--minutes 3` with a pool the teacher needs hours for: after 32 timed poses (on a CPU, from
    the first) the run stops with a KyaraError naming a --pool-size that would fit, before any step or file. A fake
    clock (every reading 0.5 s) makes the teacher's rate the same on any machine."""
    import re
    import types
    from dataclasses import replace

    ticks = iter(range(10**9))
    _fake_time(monkeypatch, types.SimpleNamespace(perf_counter=lambda: next(ticks) * 0.5))
    config = replace(TINY, examples=0, pool_size=128, teacher_batch_size=2)
    teacher = FakeTeacher()
    with pytest.raises(KyaraError, match=r"preparing the run needs 132 teacher poses \(128 for the pool, 4 for the mask"
                                         r" and the held-out PSNR\).* on cpu .*more than half") as err:
        distill(_image(), teacher, config, out_dir=tmp_path, name="tiny", progress=False, max_minutes=1.0,
                student=_tiny_student())
    suggested = int(re.search(r"smaller --pool-size \(e\.g\. (\d+)\)", str(err.value)).group(1))
    assert 0 < suggested < 128 and suggested % config.teacher_batch_size == 0
    assert not list(tmp_path.glob("*.kyara")) and not (tmp_path / CHECKPOINT_NAME).exists()

    # a budget the warm-up and the timed poses have already used up is said to be, not shown as "0.0 min left"
    ticks = iter(range(10**9))
    _fake_time(monkeypatch, types.SimpleNamespace(perf_counter=lambda: next(ticks) * 0.5))
    with pytest.raises(KyaraError, match=r"a pose, and the first \d+ poses have already used up the whole"
                                         r" budget; use a CUDA GPU \(--device cuda\) or a longer --minutes"):
        distill(_image(), teacher, config, out_dir=tmp_path / "spent", name="tiny", progress=False, max_minutes=0.05,
                student=_tiny_student())

    # the suggestion is a pool whose setup fits: it runs (the same fake clock)
    ticks = iter(range(10**9))
    _fake_time(monkeypatch, types.SimpleNamespace(perf_counter=lambda: next(ticks) * 0.5))
    result = distill(_image(), teacher, replace(config, pool_size=suggested), out_dir=tmp_path / "fits", name="tiny",
                     progress=False, max_minutes=1.0, student=_tiny_student())
    assert result.steps >= 1

    # no budget, no check: the same pool prepares in full
    ticks = iter(range(10**9))
    _fake_time(monkeypatch, types.SimpleNamespace(perf_counter=lambda: next(ticks) * 0.5))
    result = distill(_image(), teacher, replace(config, examples=2), out_dir=tmp_path / "free", name="tiny",
                     progress=False, student=_tiny_student())
    assert result.steps == 2

    # a resumed run is not checked: with its budget spent it still takes a step and writes its file
    ticks = iter(range(10**9))
    _fake_time(monkeypatch, types.SimpleNamespace(perf_counter=lambda: next(ticks) * 0.5))
    first = distill(_image(), teacher, replace(config, examples=8), out_dir=tmp_path / "resumed", name="tiny",
                    progress=False, stop_after_minutes=1e-9, student=_tiny_student())
    assert first.steps == 1 and not first.complete
    resumed = distill(_image(), teacher, replace(config, examples=8), out_dir=tmp_path / "resumed", name="tiny",
                      progress=False, resume=True, max_minutes=1e-9, student=_tiny_student())
    assert resumed.steps == 2 and (tmp_path / "resumed" / "tiny.kyara").exists()


def test_setup_shows_its_teacher_poses_as_a_progress_bar(tmp_path, capsys):
    """Before the first step the pool, the held-out targets and the mask's poses (+ the rest pose) count up one bar."""
    distill(_image(), FakeTeacher(), dataclasses.replace(TINY, examples=1), out_dir=tmp_path, name="tiny", progress=True,
            student=_tiny_student())
    err = capsys.readouterr().err
    total = TINY.pool_size + TINY.eval_poses + TINY.mask_poses + 1
    assert "prepare tiny (teacher): 100%" in err and f"{total}/{total}" in err, err[-500:]


def test_auto_sized_run_resizes_from_the_steady_rate_and_fits_its_budget(tmp_path, monkeypatch):
    """With a fake clock (every reading advances 50 ms, so a step's cost is its number of clock
    readings and the run is deterministic on any machine): an auto-sized run times from step 1, is sized at step 2,
    re-sized at step 5 and ends within its budget, with the final size in its checkpoint."""
    import types
    from dataclasses import replace

    import kyara.distill.loop as loop

    ticks = iter(range(10**9))
    _fake_time(monkeypatch, types.SimpleNamespace(perf_counter=lambda: next(ticks) * 0.05))
    monkeypatch.setattr(loop, "AUTO_MARK_STEPS", 1)
    monkeypatch.setattr(loop, "AUTO_WARMUP_STEPS", 2)
    monkeypatch.setattr(loop, "AUTO_RESIZE_STEPS", 5)
    monkeypatch.setattr(loop, "AUTO_MARGIN_S", 0.0)
    config = replace(TINY, examples=0, checkpoint_every_examples=10**6, eval_every_s=1e9)
    budget_min = 0.02                                    # 1.2 s of fake time = 24 clock readings
    result = distill(_image(), FakeTeacher(), config, out_dir=tmp_path, name="tiny", progress=False,
                     max_minutes=budget_min, student=_tiny_student())
    assert result.complete and result.steps > 5, result.steps  # sized twice, then ran the whole schedule
    assert result.wall_seconds <= budget_min * 60 + 0.5  # and ended within its budget
    from kyara.distill.checkpoint import load_checkpoint
    _, meta = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert json.loads(meta["config"])["examples"] == result.steps * config.batch_size


def _cli_distill_config(monkeypatch, tmp_path, *extra, metadata=None, psnr=36.0, complete=True, examples=700_000,
                        lite_plan=None):
    """Run `kyara distill` with the teacher and the loop replaced (its result carries `metadata`, and its student
    the lite plan `lite_plan`); return the DistillConfig it built."""
    import types

    import kyara.distill
    import kyara.teacher
    from kyara.character import SAMPLE_IMAGE
    from kyara.cli import main

    seen = {}

    def fake_distill(image, teacher, config, **kw):
        seen["config"], seen["kw"] = config, kw
        kw["output"].write_bytes(b"x")
        return types.SimpleNamespace(examples=examples, complete=complete, psnr=psnr, wall_seconds=0.0, teacher_seconds=0.0,
                                     character=types.SimpleNamespace(metadata=metadata or {},
                                                                     poser=types.SimpleNamespace(lite_face_plan=lite_plan)))

    monkeypatch.setattr(kyara.teacher, "load_teacher", lambda *a, **k: FakeTeacher())
    monkeypatch.setattr(kyara.distill, "distill", fake_distill)
    assert main(["distill", str(SAMPLE_IMAGE), "-o", str(tmp_path / "c.kyara"), "--device", "cpu", *extra]) == 0
    return seen["config"], seen["kw"]


def test_cli_distill_will_not_start_a_new_run_over_a_stopped_ones_checkpoint(monkeypatch, tmp_path, capsys):
    """Rerunning a stopped run's command without --resume is refused, naming --resume and --restart, and the
    checkpoint stays byte for byte; --restart starts anew (checkpoint and log gone); both flags: an error."""
    from kyara.character import SAMPLE_IMAGE
    from kyara.cli import main

    work = tmp_path / "c.work"
    distill(_image(), FakeTeacher(), TINY, out_dir=work, name="tiny", progress=False, stop_after_minutes=1e-9,
            student=_tiny_student())
    checkpoint = work / CHECKPOINT_NAME
    before = checkpoint.read_bytes()
    assert (work / "log.jsonl").exists()
    command = ["distill", str(SAMPLE_IMAGE), "-o", str(tmp_path / "c.kyara"), "--device", "cpu"]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert f"{checkpoint}: an earlier run's checkpoint (step 1," in err and "--resume" in err and "--restart" in err
    assert checkpoint.read_bytes() == before and not (tmp_path / "c.kyara").exists()
    assert main([*command, "--resume", "--restart"]) == 2
    assert "give one of them" in capsys.readouterr().err and checkpoint.read_bytes() == before
    _, kw = _cli_distill_config(monkeypatch, tmp_path, "--restart")
    assert kw["resume"] is False and not checkpoint.exists() and not (work / "log.jsonl").exists()
    _, kw = _cli_distill_config(monkeypatch, tmp_path)        # no checkpoint left: a plain run goes ahead
    assert kw["resume"] is False


def test_cli_distill_defaults_are_the_measured_recipe(monkeypatch, tmp_path, capsys):
    config, kw = _cli_distill_config(monkeypatch, tmp_path, "--minutes", "20")
    assert config.examples == 0 and kw["max_minutes"] == 20          # --minutes sizes the run
    assert config.tf32 and config.compile and config.blended_l2 == 40.0
    assert (config.lr_scale, config.face_lr_scale, config.ema_decay) == (6.0, 3.0, 0.999)   # session 32's recipe
    assert kw["started"] is not None                                  # the budget counts from the command's start
    config, _ = _cli_distill_config(monkeypatch, tmp_path, "--no-tf32", "--no-compile", "--blended-l2", "0")
    assert config.examples == DistillConfig().examples               # no budget: a fixed number of examples
    assert not config.tf32 and not config.compile and config.blended_l2 == 0.0
    config, _ = _cli_distill_config(monkeypatch, tmp_path, "--minutes", "5", "--examples", "1000")
    assert config.examples == 1000
    config, _ = _cli_distill_config(monkeypatch, tmp_path, "--body-pixel-fraction", "0.25", "--body-pixel-tile", "8",
                                    "--face-pixel-fraction", "0.5")
    assert (config.body_pixel_fraction, config.body_pixel_tile, config.face_pixel_fraction) == (0.25, 8, 0.5)
    assert (config.amp, config.width_multiple) == ("", 8)                 # fp16 off; padding on (same maths)
    config, _ = _cli_distill_config(monkeypatch, tmp_path, "--amp", "fp16", "--width-multiple", "8")
    assert (config.amp, config.width_multiple) == ("fp16", 8)
    assert config.lr_decay == "steps"                                      # a recipe candidate, off by default
    config, _ = _cli_distill_config(monkeypatch, tmp_path, "--ema-decay", "0", "--lr-decay", "exponential",
                                    "--lr-scale", "3", "--face-lr-scale", "0")   # the recipe before session 32
    assert (config.ema_decay, config.lr_decay, config.lr_scale, config.face_lr_scale) == (0.0, "exponential", 3.0, 0.0)
    from kyara.character import SAMPLE_IMAGE
    from kyara.cli import main
    assert main(["distill", str(SAMPLE_IMAGE), "-o", str(tmp_path / "d.kyara"), "--body-pixel-fraction", "1.5"]) == 2
    assert "--body-pixel-fraction must be in (0, 1], got 1.5" in capsys.readouterr().err
    assert main(["distill", str(SAMPLE_IMAGE), "-o", str(tmp_path / "d.kyara"), "--width-multiple", "3"]) == 2
    assert "--width-multiple must be 1, 2, 4, 8, 16 or 32, got 3" in capsys.readouterr().err
    assert main(["distill", str(SAMPLE_IMAGE), "-o", str(tmp_path / "d.kyara"), "--ema-decay", "1"]) == 2
    assert "--ema-decay must be 0 (off) or in (0, 1), got 1.0" in capsys.readouterr().err


def test_step_precision_is_plain_off_cuda_and_checked():
    """config.amp "fp16" runs only on CUDA (autocast + GradScaler there); elsewhere the step is the plain one."""
    from kyara.distill.step import StepPrecision

    with pytest.raises(ValueError, match="DistillConfig.amp must be '' \\(off\\) or 'fp16'; got 'bf16'"):
        DistillConfig(amp="bf16")
    precision = StepPrecision("fp16", torch.device("cpu"))
    assert not precision.on and precision.scales() == []
    weight = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([weight], lr=0.5)
    with precision.autocast():
        loss = (weight * 2).sum()
    assert loss.dtype == torch.float32
    precision.backward(1, loss)
    precision.step(1, opt)
    assert torch.equal(weight.detach(), torch.zeros(3))      # 1 - 0.5 × 2


@pytest.mark.gpu
def test_fp16_autocast_distils_on_cuda(tmp_path):
    """A tiny run with amp "fp16" on a GPU: finite losses, a checkpoint with the loss scales, and resume."""
    from dataclasses import replace

    from kyara.distill.checkpoint import load_checkpoint

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    config = replace(TINY, examples=4 * TINY.batch_size, amp="fp16", compile=False, checkpoint_every_examples=TINY.batch_size)
    teacher = FakeTeacher()
    teacher.device = torch.device("cuda")
    result = distill(_image(), teacher, config, out_dir=tmp_path, progress=False, student=_tiny_student())
    assert math.isfinite(result.psnr)
    _, meta = load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert len(json.loads(meta["loss_scales"])) == 2


@pytest.mark.gpu
def test_cuda_graphs_distil_and_resume_on_cuda(tmp_path):
    """The default CUDA graphs (distill.step.PassGraphs) through a whole tiny run with pixel parts on a GPU: pool
    refreshes, phase changes, evaluations and checkpoints around the replays. A stopped and resumed run (which
    captures its graphs again) ends where the uninterrupted one does, and so does a run without graphs, to the
    float rounding of the parts' gathers (their backward adds atomically, in any order; Adam carries that into
    the weights): each tensor within 1 % of its largest update."""
    from dataclasses import replace

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    config = replace(TINY, examples=16, batch_size=2, pool_size=4, compile=False, checkpoint_every_examples=4,
                     body_pixel_fraction=0.5, face_pixel_fraction=0.5)
    teacher = FakeTeacher()
    teacher.device = torch.device("cuda")
    start = {k: v.clone() for k, v in _tiny_student().state_dict().items()}

    def run(out, cfg, **kw):
        return distill(_image(), teacher, cfg, out_dir=tmp_path / out, name="tiny", progress=False,
                       student=_tiny_student(), **kw)

    straight = run("a", config)
    run("b", config, max_minutes=1e-9)
    resumed = run("b", config, resume=True)
    plain = run("c", replace(config, cuda_graphs=False))
    assert straight.steps == resumed.steps == plain.steps == 8 and math.isfinite(straight.psnr)
    metrics = straight.character.metadata["metrics"]     # the GPU memory a run held, for sizing farm jobs
    assert 0 < metrics["gpu_peak_allocated_gib"] <= metrics["gpu_peak_reserved_gib"]
    want = straight.character.poser.state_dict()
    for other in (resumed, plain):
        for k, v in other.character.poser.state_dict().items():
            if k in start:
                update = (want[k].cpu() - start[k]).abs().max()
                assert (v.cpu() - want[k].cpu()).abs().max() <= 0.01 * update + 1e-7, k


def test_configs_saved_before_blended_l2_resume_without_it():
    from dataclasses import fields

    from kyara.distill.config import PREDATING_VALUES

    old = json.loads(DistillConfig().to_json())
    del old["blended_l2"], old["compile"]
    resumed = DistillConfig.from_json(json.dumps(old))
    assert resumed.blended_l2 == PREDATING_VALUES["blended_l2"] == 0.0     # the old run had no blended term
    assert resumed.compile == DistillConfig().compile                     # speed-only field: today's default
    assert DistillConfig().blended_l2 == 40.0                               # new runs have it
    assert DistillConfig.from_json(DistillConfig().to_json()).blended_l2 == 40.0   # saved with it: kept
    assert set(PREDATING_VALUES) <= {f.name for f in fields(DistillConfig)}


def test_distill_restores_the_callers_tf32_flags(tmp_path):
    """distill() sets TF32 from its config for the run only, also when the run fails."""
    from dataclasses import replace

    from kyara.distill.loop import tf32_matmuls

    flags = lambda: (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)   # noqa: E731
    before = flags()
    try:
        for caller in ((False, False), (True, False)):
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = caller
            distill(_image(), FakeTeacher(), replace(TINY, examples=1, tf32=True), out_dir=tmp_path / "a",
                    progress=False, student=_tiny_student())
            assert flags() == caller
            with pytest.raises(KyaraError, match="no checkpoint"):
                distill(_image(), FakeTeacher(), TINY, out_dir=tmp_path / "none", resume=True, progress=False)
            assert flags() == caller
            with tf32_matmuls(True):
                assert flags() == (True, True)       # inside, the run's setting holds
            assert flags() == caller
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_lr_floor_raises_only_the_rates_below_it(monkeypatch, tmp_path):
    """lr_floor (a recipe candidate): rates at or above floor × the first phase's are THA4's; the ones below it (the
    late phases) become that; both decays, both networks' schedules; the CLI sets it; old runs had none."""
    from dataclasses import replace

    from kyara.distill.config import THA4_BODY_PHASES, THA4_FACE_PHASES, lr_at, step_lr

    for phases in (THA4_BODY_PHASES, THA4_FACE_PHASES):
        floor = 0.1 * phases[0].lr
        for f in (0.0, 0.1, 0.3, 0.55, 0.7, 0.9, 1.0):
            for decay in ("steps", "exponential"):
                plain = lr_at(phases, f, decay)
                assert lr_at(phases, f, decay, 0.1) == pytest.approx(max(plain, floor))
    assert lr_at(THA4_BODY_PHASES, 0.0, floor=0.1) == 1e-4            # the first phase: unchanged
    assert lr_at(THA4_BODY_PHASES, 0.95, floor=0.1) == pytest.approx(1e-5)   # THA4's last: 3e-6
    config = replace(TINY, lr_floor=0.1)
    assert step_lr(config.body_phases, config, 99, 100) == pytest.approx(0.1 * config.body_phases[0].lr * config.lr_scale)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="lr_floor must be in"):
            replace(TINY, lr_floor=bad)
    assert DistillConfig.from_json(json.dumps({k: v for k, v in json.loads(TINY.to_json()).items()
                                               if k != "lr_floor"})).lr_floor == 0.0
    config, _ = _cli_distill_config(monkeypatch, tmp_path, "--lr-floor", "0.1")
    assert config.lr_floor == 0.1


def test_exponential_lr_decay_runs_between_the_schedules_end_rates(tmp_path):
    """lr_decay "exponential" (a recipe candidate): the same first and last rates as THA4's steps, geometric in
    between; the loop sets it every step (the last step's rate is in the final checkpoint); "steps" is THA4's."""
    from dataclasses import replace

    from kyara.distill.config import THA4_BODY_PHASES, THA4_FACE_PHASES, lr_at, phase_at
    from kyara.distill.checkpoint import load_checkpoint

    for f in (0.0, 0.1, 0.3, 0.55, 0.9, 1.0):
        assert lr_at(THA4_BODY_PHASES, f) == phase_at(THA4_BODY_PHASES, f).lr
    assert lr_at(THA4_BODY_PHASES, 0.0, "exponential") == pytest.approx(1e-4)
    assert lr_at(THA4_BODY_PHASES, 1.0, "exponential") == pytest.approx(3e-6)
    assert lr_at(THA4_BODY_PHASES, 0.5, "exponential") == pytest.approx((1e-4 * 3e-6) ** 0.5)   # geometric mean
    rates = [lr_at(THA4_FACE_PHASES, f / 10, "exponential") for f in range(11)]
    assert all(a > b for a, b in zip(rates, rates[1:])) and rates[-1] == pytest.approx(1e-4 / 30)
    with pytest.raises(ValueError, match="lr_decay must be steps or exponential"):
        replace(TINY, lr_decay="cosine")
    assert DistillConfig.from_json(json.dumps({k: v for k, v in json.loads(TINY.to_json()).items()
                                               if k != "lr_decay"})).lr_decay == "steps"   # older runs: THA4's

    config = replace(TINY, lr_decay="exponential")
    distill(_image(), FakeTeacher(), config, out_dir=tmp_path, name="tiny", progress=False, student=_tiny_student())
    _, meta = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    last = 3 / 4                                                                   # 4 steps: fractions 0, ¼, ½, ¾
    for name, phases in (("face_opt", config.face_phases), ("body_opt", config.body_phases)):
        lr = json.loads(meta[name])["param_groups"][0]["lr"]
        scale = config.face_lr_scale if name == "face_opt" and config.face_lr_scale else config.lr_scale
        assert lr == pytest.approx(lr_at(phases, last, "exponential") * scale)
        assert lr != pytest.approx(lr_at(phases, last) * scale)


def test_flow_weight_scales_the_flow_term_of_every_body_phase(tmp_path, bit_exact_torch):
    """DistillConfig.flow_weight (--flow-weight): each body phase's w_flow × K, nothing else; 1 is THA4's schedule,
    25 the default (session 40), and a saved config that predates the field reads as THA4's 1.
    A run with K = 0 trains without the flow term, so it ends elsewhere than one with K = 1."""
    from dataclasses import replace

    from kyara.distill.config import THA4_BODY_PHASES, body_phase_at, phase_at

    config = replace(TINY, flow_weight=30.0)
    for fraction in (0.0, 0.3, 0.5, 0.99):
        plain, scaled = phase_at(THA4_BODY_PHASES, fraction), body_phase_at(config, fraction)
        assert scaled.w_flow == 30.0 * plain.w_flow
        assert replace(scaled, w_flow=plain.w_flow) == plain
        assert body_phase_at(replace(TINY, flow_weight=1.0), fraction) == plain
    assert DistillConfig().flow_weight == 25.0
    predating = {k: v for k, v in json.loads(TINY.to_json()).items() if k != "flow_weight"}
    assert DistillConfig.from_json(json.dumps(predating)).flow_weight == 1.0
    with pytest.raises(ValueError, match="flow_weight must be a number >= 0"):
        replace(TINY, flow_weight=-1.0)
    runs = [distill(_image(), FakeTeacher(), replace(TINY, flow_weight=k), out_dir=tmp_path / str(k), name="tiny",
                    progress=False, student=_tiny_student()) for k in (0.0, 1.0)]
    weights = [r.character.poser.body_morpher.last_linear.weight for r in runs]
    assert not torch.equal(*weights)


@pytest.mark.parametrize("fraction", [1.0, 0.25])
def test_the_loop_hands_the_flow_line_weight_to_the_body_loss(tmp_path, bit_exact_torch, fraction):
    """DistillConfig.flow_line_weight reaches the body loss on every pixel and on parts (the losses themselves:
    tests/test_distill_flow_line_loss.py): runs with L = 0 twice are bit-equal, with L = 8 they end elsewhere."""
    from dataclasses import replace

    def weights(line_weight: float, name: str) -> torch.Tensor:
        config = replace(TINY, flow_line_weight=line_weight, body_pixel_fraction=fraction)
        run = distill(_image(), FakeTeacher(), config, out_dir=tmp_path / name, name="tiny", progress=False,
                      student=_tiny_student())
        return run.character.poser.body_morpher.last_linear.weight

    off = weights(0.0, "a")
    assert torch.equal(off, weights(0.0, "b"))
    assert not torch.equal(off, weights(8.0, "c"))


def test_cli_distill_names_the_divergence_rollbacks_in_its_last_line(monkeypatch, tmp_path, capsys):
    rollbacks = [{"network": "face", "step": 6000, "loss": 2.9, "best": 0.5, "restored_step": 5000, "lr_factor": 0.5}]
    _cli_distill_config(monkeypatch, tmp_path, metadata={"metrics": {"rollbacks": rollbacks}})
    assert "; 1 divergence rollback(s): face at step 6000" in capsys.readouterr().out
    _cli_distill_config(monkeypatch, tmp_path)
    assert "rollback" not in capsys.readouterr().out


def test_cli_distill_names_the_lite_grid_chosen_for_the_student(monkeypatch, tmp_path, capsys):
    import types

    _cli_distill_config(monkeypatch, tmp_path, lite_plan=types.SimpleNamespace(body_grid=160))
    assert ", CPU-lite body grid 160²" in capsys.readouterr().out
    _cli_distill_config(monkeypatch, tmp_path, lite_plan=types.SimpleNamespace(body_grid=None))
    assert "body grid" not in capsys.readouterr().out


def test_cli_distill_notes_a_low_psnr_of_a_finished_run_only(monkeypatch, tmp_path, capsys):
    _cli_distill_config(monkeypatch, tmp_path, psnr=31.8)
    out = capsys.readouterr().out
    assert "held-out PSNR 31.80 dB" in out and "note: held-out PSNR under 34 dB" in out and "--minutes" in out
    assert "--flow-weight" not in out                                      # the default since session 40: no hint left
    _cli_distill_config(monkeypatch, tmp_path, psnr=35.8)
    assert "note:" not in capsys.readouterr().out
    _cli_distill_config(monkeypatch, tmp_path, psnr=20.0, complete=False)     # stopped early: --resume goes on
    out = capsys.readouterr().out
    assert "stopped early" in out and "note:" not in out
    # a short run is low for being short: the note says so and keeps long hair out of it
    _cli_distill_config(monkeypatch, tmp_path, psnr=17.0, examples=32)
    out = capsys.readouterr().out
    assert "after 32 examples, a short run" in out and "--examples" in out
    assert "long hair" not in out and "--flow-weight" not in out
