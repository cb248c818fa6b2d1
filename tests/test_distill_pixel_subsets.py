"""Training the body morpher on a random part of the region per step (DistillConfig.body_pixel_fraction,
`kyara distill --body-pixel-fraction`; issue 16, cheaper steps), and the face morpher on a part of its box
(face_pixel_fraction). The subset path must compute the same
student outputs and, on the whole region, the same gradients as the full-canvas path; its parts must
give every region pixel the same chance."""
import numpy as np
import pytest
import torch

from kyara.distill.config import DistillConfig, Phase
from kyara.distill.step import TrainForward, subset_body_loss, subset_face_loss
from kyara.distill.parts import PixelParts
from kyara.distill.losses import body_loss, face_loss
from kyara.nn.warp import apply_flow, apply_flow_at
from kyara.pose_sampler import sample_poses
from kyara.student import BodyMorpher, FaceMorpher, Student
from kyara.student.pixels import PixelSet, dilate

PHASE = Phase(1.0, 1e-4, w_blended=10.0, w_warped=1.0, w_flow=2.0, w_color=0.5)


def _tiny_student() -> Student:
    torch.manual_seed(0)
    student = Student(FaceMorpher(hidden=16, num_layers=3), BodyMorpher(levels=((128, 16, 8), (256, 8, 8), (512, 8, 8))))
    student.body_morpher.last_linear.weight.data.normal_(0, 0.3)   # non-trivial flow, alpha and colour
    return student


def _scene(n: int = 2):
    """Input image, the teacher's final image (an opaque box, moved), its flow, and the region: the
    visible pixels of both dilated by 12 px (the distiller's region margin, more than flow_weight's 8)."""
    g = torch.Generator().manual_seed(1)
    image = torch.rand(n, 4, 512, 512, generator=g) * 2 - 1
    image[:, 3] = -1.0
    image[:, 3, 150:350, 180:330] = 1.0
    final = image.roll(shifts=(6, -4), dims=(2, 3)).clone()
    flow = torch.randn(n, 2, 512, 512, generator=g) * 0.01
    region = dilate((image[0, 3] > -0.99) | (final[:, 3] > -0.99).any(0), 12)
    return image, final, flow, region


def test_apply_flow_at_is_apply_flow_at_those_pixels():
    image, _, flow, region = _scene()
    pixels = PixelSet.from_mask(region.numpy() & (np.random.default_rng(0).random((512, 512)) < 0.3))
    at = pixels.output.index
    got = apply_flow_at(image, flow.flatten(2)[:, :, at], at)
    # the same sampling positions (identity_grid + flow) into the same grid_sample: the same numbers
    assert torch.equal(got, apply_flow(image, flow).flatten(2)[:, :, at])
    with pytest.raises(ValueError, match=r"apply_flow_at: image .* disagree"):
        apply_flow_at(image, flow.flatten(2)[:, :, at], at[:-1])


def test_body_outputs_at_are_the_body_outputs_at_those_pixels():
    student = _tiny_student()
    image, _, _, region = _scene()
    student.set_region(region)
    poses = sample_poses(2, torch.Generator().manual_seed(3))
    parts = PixelParts(region, 512, 3, 0.25, seed=0, device=torch.device("cpu"), tile=16)
    pixels, _ = parts.pick(torch.Generator().manual_seed(0))
    full = student.body_outputs(image, poses)
    got = TrainForward(student).body_at(image, poses, pixels)
    at = pixels.output.index
    # Per-pixel networks: the same values, up to matmul rounding, which differs with the number of rows (the
    # CPU's blocking) and which the sine layers (×30 each) amplify: 2.3e-5 measured once with 2 threads
    # (values of order 1), 0 in most runs; 1e-4 allows for other CPUs.
    for name in ("flow", "alpha", "color"):
        torch.testing.assert_close(getattr(got, name), getattr(full, name).flatten(2)[:, :, at], atol=1e-4, rtol=0)
    # ... and the same composition of those values (warped through the noise image would amplify the
    # rounding above by its pixel-to-pixel steps, so it is checked as a function of got's own flow)
    assert torch.equal(got.warped, apply_flow_at(image, got.flow, at))
    torch.testing.assert_close(got.image, (1 - got.alpha) * got.warped + got.alpha * got.color, atol=0, rtol=0)


@pytest.mark.parametrize("masked_flow,edge_weight", [(True, 0.0), (False, 0.0), (True, 8.0)])
def test_the_subset_loss_on_the_whole_region_has_the_full_losss_gradients(masked_flow, edge_weight):
    """With the part = the whole region and pixel_share = its share of the canvas, every term is the
    full-canvas term minus a constant (outside the region the student is the identity), so the
    gradients are the same: the subset loss is the full loss's estimator, not another recipe."""
    image, final, flow, region = _scene()
    assert_subset_grads_match_full(image, final, flow, region, PHASE,
                                   DistillConfig(masked_flow=masked_flow, edge_weight=edge_weight))


def assert_subset_grads_match_full(image, final, flow, region, phase, config: DistillConfig) -> None:
    """subset_body_loss on the whole region (pixel_share = its share of the canvas) and body_loss on the canvas,
    with config's loss options, give the body morpher the same gradients."""
    poses = sample_poses(2, torch.Generator().manual_seed(4))
    grads = {}
    for path in ("full", "subset"):
        student = _tiny_student()
        student.set_region(region)
        forward = TrainForward(student)
        if path == "full":
            out = forward.body(image, poses)
            loss, _ = body_loss(out, final, apply_flow(image, flow), flow, phase, config.masked_flow, config.blended_l2,
                                config.edge_weight, flow_line_weight=config.flow_line_weight)
        else:
            whole = PixelSet.from_mask(region.numpy(), 3)
            loss, _ = subset_body_loss(forward, image, poses, final, flow, whole, float(region.float().mean()),
                                       phase, config)
        loss.backward()
        grads[path] = [p.grad.clone() for p in student.body_morpher.parameters()]
    for full, subset in zip(grads["full"], grads["subset"]):
        # measured equal here (1 and 2 threads); other CPUs round the two paths' matmuls differently (see
        # above), which moves a gradient by ~1e-5 of its largest value. A wrong share or a lost term would
        # move it by order 1, far above this bound.
        assert float((full - subset).abs().max()) <= 1e-3 * float(full.abs().max())


@pytest.mark.parametrize("tile", [1, 16])
def test_parts_split_the_region_and_each_pixel_is_drawn_equally(tile):
    region = torch.zeros(512, 512, dtype=torch.bool)
    region[100:300, 120:380] = True
    region[300:340, 200:210] = True    # squares that the region only partly covers
    parts = PixelParts(region, 512, 3, 0.3, seed=0, device=torch.device("cpu"), tile=tile)
    k = parts.parts_per_partition
    assert k == 3 and parts.fraction == pytest.approx(1 / 3) and len(parts.sets) == k * parts.PARTITIONS
    where = np.flatnonzero(region.numpy())
    loss = torch.rand(512 * 512, generator=torch.Generator().manual_seed(0))   # any per-pixel loss
    for p in range(parts.PARTITIONS):   # each partition: disjoint parts, together exactly the region
        members = [set(s.output.index.tolist()) for s, _ in parts.sets[p * k:(p + 1) * k]]
        assert set().union(*members) == set(where.tolist()) and sum(len(m) for m in members) == len(where)
        # share × the part's mean, averaged over the k equally likely parts, is the canvas mean of the loss
        # with zeros outside the region: the part's loss is an unbiased estimate of the whole's
        estimate = sum(share * float(loss[s.output.index].mean()) for s, share in parts.sets[p * k:(p + 1) * k]) / k
        assert estimate == pytest.approx(float(loss[where].sum()) / loss.numel(), rel=1e-5)
        if tile == 1:
            assert max(len(m) for m in members) - min(len(m) for m in members) <= 1
        else:   # whole squares: no square is split between parts
            for m in members:
                squares = {(i // 512 // tile, i % 512 // tile) for i in m}
                others = set().union(*(x for x in members if x is not m))
                assert not squares & {(i // 512 // tile, i % 512 // tile) for i in others}
    # every pixel lies in exactly one part of each partition, so a uniformly drawn part holds it with
    # probability 1/k; the partitions differ (else the same pixels would always train together)
    assert parts.sets[0][0].output.index.tolist() != parts.sets[k][0].output.index.tolist()
    assert PixelParts(region, 512, 3, 1.0, 0, torch.device("cpu"), tile).parts_per_partition == 1


def test_squares_spare_the_coarser_levels():
    """Why the parts are squares: scattered pixels need nearly all of the coarser levels' pixels (their
    bilinear taps), squares about their own share (docs/distill.md has the sample's table)."""
    region = torch.zeros(512, 512, dtype=torch.bool)
    region[64:448, 96:416] = True
    full = PixelSet.from_mask(region.numpy(), 3)
    for tile, most in ((1, 0.9), (16, 0.45)):
        parts = PixelParts(region, 512, 3, 0.25, 0, torch.device("cpu"), tile)
        coarse = np.mean([len(s.levels[1]) for s, _ in parts.sets]) / len(full.levels[1])
        assert (coarse > most) if tile == 1 else (coarse < most)
    with pytest.raises(ValueError, match="pixel parts: the tile must divide the grid size 512, got 3"):
        PixelParts(region, 512, 3, 0.25, 0, torch.device("cpu"), 3)


def test_the_face_at_some_pixels_and_its_loss_on_the_whole_box():
    """forward_at is forward at those pixels; the part loss on the whole box (one part, share 1) has the
    full face loss's gradients."""
    student = _tiny_student()
    face = student.face_morpher
    g = torch.Generator().manual_seed(5)
    poses = torch.rand(3, 39, generator=g)
    parts = PixelParts(None, face.size, 1, 0.25, 0, torch.device("cpu"))
    pixels, share = parts.pick(g)
    assert share == pytest.approx(1.0, abs=1e-3)                  # equal parts of the whole box
    at = pixels.output.index
    with torch.no_grad():   # per-pixel network: equal up to matmul rounding (see the body test)
        torch.testing.assert_close(face.forward_at(poses, at), face(poses).flatten(2)[:, :, at], atol=1e-4, rtol=0)
    target = torch.rand(3, 4, face.size, face.size, generator=g) * 2 - 1
    mask = (torch.rand(1, 1, face.size, face.size, generator=g) > 0.7).float()
    config = DistillConfig()
    whole = PixelSet.from_mask(np.ones((face.size, face.size), dtype=bool))
    forward = TrainForward(student)
    grads = []
    for loss in (face_loss(face(poses), target, mask, config.face_mask_weight),
                 subset_face_loss(forward, poses, target, mask, whole, 1.0, config)):
        grads.append(torch.autograd.grad(loss, list(face.parameters())))
    for full, part in zip(*grads):
        assert float((full - part).abs().max()) <= 1e-3 * float(full.abs().max())


def test_body_pixel_fraction_is_checked():
    with pytest.raises(ValueError, match=r"body_pixel_fraction must be in \(0, 1\], got 0"):
        DistillConfig(body_pixel_fraction=0.0)
    with pytest.raises(ValueError, match="body_pixel_fraction"):
        DistillConfig(body_pixel_fraction=1.5)
    # the default trains on quarter parts (session 16); runs saved before the fields existed, on every pixel
    assert (DistillConfig().body_pixel_fraction, DistillConfig().face_pixel_fraction) == (0.25, 0.25)
    assert DistillConfig.from_json('{"seed": 0}').body_pixel_fraction == 1.0
    with pytest.raises(ValueError, match=r"face_pixel_fraction must be in \(0, 1\], got -0.5"):
        DistillConfig(face_pixel_fraction=-0.5)
    with pytest.raises(ValueError, match="body_pixel_tile must be a power of 2 up to 512, got 12"):
        DistillConfig(body_pixel_tile=12)
