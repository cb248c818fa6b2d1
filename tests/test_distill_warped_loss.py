"""The warped-image squared-error term (DistillConfig.warped_l2, `kyara distill --warped-l2`; issue 16 item 2):
W × MSE of the student's warped image against the teacher's, × the phase's w_blended; with W at 0 the loss is
exactly the old one, and the term's gradient reaches the student only through its warped image."""
import argparse
import json
from dataclasses import replace

import pytest
import torch

from kyara.distill.config import DistillConfig, Phase
from kyara.distill.losses import body_loss
from kyara.student import BodyMorpherOutput

H = W = 64  # the loss is size-agnostic; small images keep the test fast
PHASE = Phase(1.0, 1e-4, w_blended=10.0, w_warped=1.0, w_flow=2.0, w_color=0.5)


def _fields(seed: int) -> list[torch.Tensor]:
    """image, alpha, color, warped, flow of a student, and target image, target warped, target flow: random."""
    g = torch.Generator().manual_seed(seed)
    shapes = (4, 1, 4, 4, 2, 4, 4, 2)
    return [(torch.rand(1, c, H, W, generator=g) * 2 - 1) * (0.1 if c == 2 else 1.0) for c in shapes]


def test_warped_l2_zero_is_exactly_the_old_loss():
    image, alpha, color, warped, flow, target, target_warped, target_flow = _fields(0)
    warped.requires_grad_(True)
    out = BodyMorpherOutput(image, alpha, color, warped, flow)
    old, old_terms = body_loss(out, target, target_warped, target_flow, PHASE, blended_l2=40.0)
    new, terms = body_loss(out, target, target_warped, target_flow, PHASE, blended_l2=40.0, warped_l2=0.0)
    assert "warped_mse" not in terms and terms.keys() == old_terms.keys()
    assert torch.equal(new, old)   # the same operations in the same order: bit-identical
    assert torch.equal(torch.autograd.grad(new, warped)[0], torch.autograd.grad(old, warped)[0])


@pytest.mark.parametrize("share", [1.0, 3.5])
def test_warped_l2_adds_the_weighted_warped_mse(share):
    image, alpha, color, warped, flow, target, target_warped, target_flow = _fields(1)
    out = BodyMorpherOutput(image, alpha, color, warped, flow)
    off, _ = body_loss(out, target, target_warped, target_flow, PHASE, blended_l2=40.0, pixel_share=share)
    on, terms = body_loss(out, target, target_warped, target_flow, PHASE, blended_l2=40.0, pixel_share=share,
                          warped_l2=25.0)
    mse = share * (warped - target_warped).square().mean()
    torch.testing.assert_close(terms["warped_mse"], mse)
    # float32: the difference of two sums of five O(10) terms; the added term is O(10³), rounding ~1e-4 of it
    torch.testing.assert_close(on - off, PHASE.w_blended * 25.0 * mse, rtol=1e-5, atol=1e-3)


def test_warped_term_gradient_reaches_only_the_warped_image():
    image, alpha, color, warped, flow, target, target_warped, target_flow = _fields(2)
    leaves = [t.requires_grad_(True) for t in (image, alpha, color, warped, flow)]
    out = BodyMorpherOutput(*leaves)
    off, _ = body_loss(out, target, target_warped, target_flow, PHASE)
    on, _ = body_loss(out, target, target_warped, target_flow, PHASE, warped_l2=25.0)
    extra = torch.autograd.grad(on - off, leaves, allow_unused=True)
    names = ("image", "alpha", "color", "warped", "flow")
    for name, g in zip(names, extra):
        if name == "warped":
            # d/dwarped of w_blended · W · mean((warped − target)²) = 2 · w_blended · W · (warped − target) / numel
            expected = 2 * PHASE.w_blended * 25.0 * (warped - target_warped).detach() / warped.numel()
            torch.testing.assert_close(g, expected, rtol=1e-4, atol=1e-7)   # the old loss's L1 part cancels to rounding
        else:
            assert g is None or torch.count_nonzero(g.abs() > 1e-9) == 0, name


@pytest.mark.parametrize("field, flag", [("warped_l2", "--warped-l2"), ("edge_weight", "--edge-weight")])
def test_extra_loss_terms_are_off_by_default_and_checked(field, flag):
    """The two opt-in body-loss terms (this one and the edge term, tests/test_distill_edge_loss.py): off by
    default until an ablation shows a gain, off for configs saved before they existed, validated in the config
    and on the command line."""
    with pytest.raises(ValueError, match=field):
        DistillConfig(**{field: -1.0})
    assert getattr(DistillConfig(), field) == 0.0
    saved = json.loads(DistillConfig().to_json())
    del saved[field]
    assert getattr(DistillConfig.from_json(json.dumps(saved)), field) == 0.0

    from kyara.cli import distill as cli_distill
    from kyara.errors import KyaraError

    parser = argparse.ArgumentParser()
    cli_distill.register(parser.add_subparsers())
    args = parser.parse_args(["distill", "x.png", "-o", "x.kyara", flag, "40"])
    assert getattr(cli_distill.checked_config(args), field) == 40.0
    args = parser.parse_args(["distill", "x.png", "-o", "x.kyara", flag, "-1"])
    with pytest.raises(KyaraError, match=flag):
        cli_distill.checked_config(args)


@pytest.mark.parametrize("fraction", [1.0, 0.25])
def test_distill_loop_passes_the_warped_l2(tmp_path, fraction):
    """The loop hands DistillConfig.warped_l2 to the body loss, on every pixel and on pixel parts: the term
    shows in log.jsonl when on, and not when off."""
    from kyara.distill import distill
    from kyara.distill.checkpoint import LOG_NAME
    from kyara.student import BodyMorpher, FaceMorpher, Student
    from tests.fakes import FakeTeacher

    config = DistillConfig(teacher="fake", examples=2, batch_size=1, face_batch_multiplier=1, teacher_batch_size=1,
                           pool_size=1, reuse=1000.0, eval_poses=1, eval_every_s=0.0, checkpoint_every_examples=2,
                           mask_poses=2, body_pixel_fraction=fraction, face_pixel_fraction=fraction)
    image = torch.rand(4, 512, 512, generator=torch.Generator().manual_seed(0)) * 2 - 1
    logs = {}
    for weight in (0.0, 40.0):
        torch.manual_seed(0)
        student = Student(FaceMorpher(hidden=16, num_layers=3), BodyMorpher(levels=((128, 16, 8), (512, 8, 8))))
        out = tmp_path / f"{fraction}-{weight}"
        distill(image, FakeTeacher(), replace(config, warped_l2=weight), out_dir=out, name="tiny",
                progress=False, student=student)
        logs[weight] = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]
    assert all("warped_mse" not in line for line in logs[0.0])
    assert any(line.get("warped_mse", 0.0) > 0 for line in logs[40.0])
