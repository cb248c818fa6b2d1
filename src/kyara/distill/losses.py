"""Distillation losses: pure functions of (prediction, target[, mask]) → scalar (THA4 §4.2)."""
from __future__ import annotations

import torch

from kyara.distill.config import Phase
from kyara.image import display_space


def l1(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (prediction - target).abs().mean()


def face_loss(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, mask_weight: float) -> torch.Tensor:
    """L1 over the whole 128×128 face box + mask_weight × L1 inside the movable-parts mask.

    prediction, target: (N, 4, 128, 128) model space; mask: (1, 1, 128, 128) in {0, 1}.
    """
    diff = (prediction - target).abs()
    return diff.mean() + mask_weight * (diff * mask).mean()


def box_max(x: torch.Tensor, radius: int) -> torch.Tensor:
    """(N, C, H, W) → (N, C, H, W): the maximum over each pixel's (2·radius + 1)² window (clipped at the borders),
    as max_pool2d(x, 2·radius + 1, stride=1, padding=radius), computed as a column pass and a row pass: a
    maximum over a rectangle is the maximum of its columns' maxima, so the values are the same, for 2·(2r + 1)
    reads a pixel instead of (2r + 1)² (the 17 × 17 flow mask was 3 % of a training step's GPU time)."""
    k = 2 * radius + 1
    x = torch.nn.functional.max_pool2d(x, (k, 1), stride=1, padding=(radius, 0))
    return torch.nn.functional.max_pool2d(x, (1, k), stride=1, padding=(0, radius))


def flow_weight(target_image: torch.Tensor, dilate_px: int = 8) -> torch.Tensor:
    """(N, 1, H, W) in {0, 1}: where the teacher's output is visible, dilated by dilate_px.

    The teacher's appearance flow in fully transparent regions samples nothing visible and is
    arbitrary; matching it wastes the student's capacity, so the flow term ignores it.
    """
    return box_max((target_image[:, 3:4] > -0.99).float(), dilate_px)


EDGE_DILATE_PX = 2  # the edge band reaches this far on each side of a silhouette edge: the student's sub-pixel
                    # flow errors move edges by about a pixel, and a 5-px band covers that with room to spare


def alpha_edges(target_image: torch.Tensor, dilate_px: int = EDGE_DILATE_PX) -> torch.Tensor:
    """(N, 1, H, W) float in [0, 1]: the teacher's silhouette edges, dilated. target_image: (N, 4, H, W) model
    space (alpha in [-1, 1]). The value is the local range (max − min) of alpha in [0, 1] over a
    (2·dilate_px + 1)² window: 1 within dilate_px of a hard edge between opaque and transparent, a fraction
    along faint edges, exactly 0 where alpha is flat (inside the character, the empty background)."""
    alpha = (target_image[:, 3:4] + 1.0) * 0.5
    return box_max(alpha, dilate_px) + box_max(-alpha, dilate_px)


# the display-space squared gradient per pixel (channel mean) at which a pixel counts as wholly on a line: the
# threshold of benchmarks/student_error_map.py's "lines" (15 % of a long-haired drawing's visible pixels, where
# 72–77 % of the warp's squared error sits; docs/benchmarks.md, sessions 38–39)
LINE_GRADIENT2 = 1e-2


def central_gradients(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) → its x and y central differences per px (zero at the border), each (N, C, H, W)."""
    gx = torch.nn.functional.pad(image[..., 2:] - image[..., :-2], (1, 1)) / 2
    gy = torch.nn.functional.pad(image[..., 2:, :] - image[..., :-2, :], (0, 0, 1, 1)) / 2
    return gx, gy


def line_detail(target_image: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) in [0, 1]: how much each pixel lies on a line of the teacher's image. target_image:
    (N, 4, H, W) model space. The squared gradient (central differences, zero at the border) of the image in
    display space (colour × alpha, and alpha: silhouette edges count as lines), channel mean, / LINE_GRADIENT2,
    clipped at 1: 1 on the lines, about 0 on flat colour and the empty background. A flow error costs the
    image only where it moves a line (to first order, (error · gradient)²), so this says where the flow must
    be exact."""
    gx, gy = central_gradients(display_space(target_image))
    return ((gx.square() + gy.square()).mean(1, keepdim=True) / LINE_GRADIENT2).clamp(max=1.0)


def body_loss(student, target_image: torch.Tensor, target_warped: torch.Tensor, target_flow: torch.Tensor,
              phase: Phase, masked_flow: bool = True, blended_l2: float = 0.0, edge_weight: float = 0.0, *,
              flow_w: torch.Tensor | None = None, edges: torch.Tensor | None = None, pixel_share: float = 1.0,
              warped_l2: float = 0.0, flow_line_weight: float = 0.0, lines: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """THA4's four-term body loss. student: BodyMorpherOutput; targets (N, C, 512, 512).

    The direct colour output is pulled towards the teacher's final image, as in THA4. With
    masked_flow the flow term counts only where the teacher's output is visible (flow_weight),
    normalised by the visible fraction so the THA4 weights keep their scale.
    blended_l2 adds blended_l2 × MSE of the blended image (weighted by the phase's w_blended, so it
    acts mostly late): L1 pushes every pixel equally, while PSNR is dominated by the few pixels with
    large errors (silhouette edges), which a squared error pushes hardest.
    edge_weight > 0 adds edge_weight × the mean over pixels of alpha_edges × the blended image's squared
    error (also × w_blended; logged as "edge_mse"): more push still on the silhouette edges, where most of
    the squared error sits (issue 16). edge_weight = 0 (the default) leaves the loss exactly as it was.
    warped_l2 > 0 adds warped_l2 × the MSE of the warped image against target_warped (the same input moved by
    the teacher's flow), also × w_blended (logged as "warped_mse"): the blended MSE reaches the flow only
    through (1 − alpha), and the student's alpha can paint over a flow error with blur; this term asks the
    flow itself to be right wherever the image has detail (in flat regions a flow error changes nothing).
    warped_l2 = 0 (the default) leaves the loss exactly as it was.
    flow_line_weight L > 0 (with masked_flow) weighs the flow term's pixels by 1 + L · line_detail(target): a
    weighted mean, so a uniform flow error gives the same term as before and --flow-weight keeps its meaning,
    but the term's push moves from flat colour, where a flow error costs nothing, onto the lines, where the
    image's error is (sessions 38–39: 0.6 px off on both). L = 0 (the default) leaves the loss exactly as it was.

    On a pixel subset (training with DistillConfig.body_pixel_fraction < 1) every tensor is (N, C, M) at M
    sampled pixels of the region, flow_w, edges and lines are flow_weight, alpha_edges and line_detail of the
    whole target taken at those pixels (they need the neighbourhood), and pixel_share = K · part pixels / canvas pixels
    (kyara.distill.parts.PixelParts, one of K parts) turns the part's per-pixel means into unbiased
    estimates of the whole canvas's (outside the region the student is the identity, a constant the loss
    can drop), so the terms keep their relative weights.
    """
    if masked_flow:
        w = flow_weight(target_image) if flow_w is None else flow_w
        if flow_line_weight:
            w = w * (1 + flow_line_weight * (line_detail(target_image) if lines is None else lines))
        flow_term = ((student.flow - target_flow).abs() * w).mean() / w.mean().clamp_min(1e-6)
    else:
        if flow_line_weight:
            raise ValueError("flow_line_weight needs masked_flow: it reweighs the masked flow term's pixels")
        flow_term = pixel_share * l1(student.flow, target_flow)
    terms = {
        "blended": pixel_share * l1(student.image, target_image),
        "warped": pixel_share * l1(student.warped, target_warped),
        "flow": flow_term,
        "color": pixel_share * l1(student.color, target_image),
        "blended_mse": pixel_share * (student.image - target_image).square().mean(),
    }
    total = (phase.w_blended * (terms["blended"] + blended_l2 * terms["blended_mse"]) + phase.w_warped * terms["warped"]
             + phase.w_flow * terms["flow"] + phase.w_color * terms["color"])
    if edge_weight:
        e = alpha_edges(target_image) if edges is None else edges
        terms["edge_mse"] = pixel_share * (e * (student.image - target_image).square()).mean()
        total = total + phase.w_blended * edge_weight * terms["edge_mse"]
    if warped_l2:
        terms["warped_mse"] = pixel_share * (student.warped - target_warped).square().mean()
        total = total + phase.w_blended * warped_l2 * terms["warped_mse"]
    return total, {k: v.detach() for k, v in terms.items()}   # tensors: no GPU sync per step
