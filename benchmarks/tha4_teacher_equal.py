"""kyara's THA4 teacher networks against the official THA4 code, with the same random weights.

Builds each of the five networks in the official code (PYTHONPATH=<tha4-demo>/src, imported from
there; kyara never imports it) with random weights, copies the state dict strictly into kyara's
network of the same role, feeds both the same random input and prints max |Δ| per output.
Zero-initialised layers (U-Net output convs, attention projections, the upscaler's coarse conv) are
randomised too, so every path is exercised. Then the whole pipeline (official mode_07 poser vs
``THA4Teacher``) on one image and a few poses.

    PYTHONPATH=/tmp/tha4demo/src .venv/bin/python benchmarks/tha4_teacher_equal.py --tha4-demo /tmp/tha4demo
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch


def randomize(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Every parameter ~ N(0, 0.05²) (norm weights ~ 1 + N(0, 0.1²)): non-trivial, numerically tame."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(0.05 * noise)


def max_diff(a, b) -> float:
    return max(float((x.double() - y.double()).abs().max()) for x, y in zip(a, b))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tha4-demo", type=Path, default=Path("/tmp/tha4demo"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--poses", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(args.tha4_demo / "src"))
    torch.set_grad_enabled(False)

    import tha4.poser.modes.mode_07 as m07
    from tha4.nn.common.unet import AttentionBlockArgs, UnetArgs  # noqa: F401 (mode_07 builds them)
    from tha4.nn.morpher.morpher_00 import Morpher00, Morpher00Args
    from tha4.nn.upscaler.upscaler_02 import Upscaler02, Upscaler02Args

    from kyara.teacher.tha4 import THA4Teacher, build_tha4

    g = torch.Generator().manual_seed(args.seed)
    kyara = build_tha4("cpu").eval()

    # Official constructors, with the configurations of mode_07's loaders (weights come from us).
    def official_unet_args(mc, mult, att):
        return m07.UnetArgs(in_channels=4, out_channels=7, model_channels=mc, level_channel_multipliers=mult,
                            level_use_attention=att, num_res_blocks_per_level=1, num_middle_res_blocks=4,
                            time_embedding_channels=None, cond_input_channels=6, cond_internal_channels=256,
                            attention_block_args=m07.AttentionBlockArgs(num_heads=8, use_new_attention_order=True),
                            dropout_prob=0.0)
    f = m07
    official = {
        "eyebrow_decomposer": f.EyebrowDecomposer00Factory(f.EyebrowDecomposer00Args(
            image_size=128, image_channels=4, start_channels=64, bottleneck_image_size=16, num_bottleneck_blocks=6,
            max_channels=512, block_args=f.BlockArgs(initialization_method='he', use_spectral_norm=False,
                                                      normalization_layer_factory=f.InstanceNorm2dFactory(),
                                                      nonlinearity_factory=f.ReLUFactory(inplace=True)))).create(),
        "eyebrow_combiner": f.EyebrowMorphingCombiner00Factory(f.EyebrowMorphingCombiner00Args(
            image_size=128, image_channels=4, start_channels=64, num_pose_params=12, bottleneck_image_size=16,
            num_bottleneck_blocks=6, max_channels=512,
            block_args=f.BlockArgs(initialization_method='he', use_spectral_norm=False,
                                   normalization_layer_factory=f.InstanceNorm2dFactory(),
                                   nonlinearity_factory=f.ReLUFactory(inplace=True)))).create(),
        "face_morpher": f.FaceMorpher08Factory(f.FaceMorpher08Args(
            image_size=192, image_channels=4, num_expression_params=27, start_channels=64, bottleneck_image_size=24,
            num_bottleneck_blocks=6, max_channels=512,
            block_args=f.BlockArgs(initialization_method='he', use_spectral_norm=False,
                                   normalization_layer_factory=f.InstanceNorm2dFactory(),
                                   nonlinearity_factory=f.ReLUFactory(inplace=False)),
            output_iris_mouth_grid_change=True)).create(),
        "body_morpher": Morpher00(Morpher00Args(image_size=256, image_channels=4, num_pose_parameters=6,
                                                unet_args=official_unet_args(64, [1, 2, 4, 4, 4],
                                                                             [False] * 4 + [True]))),
        "upscaler": Upscaler02(Upscaler02Args(image_size=512, image_channels=4, num_pose_parameters=6,
                                              unet_args=official_unet_args(32, [1, 2, 4, 8, 8, 8],
                                                                           [False] * 5 + [True]))),
    }
    img = lambda n, s: torch.rand(n, 4, s, s, generator=g) * 2 - 1  # noqa: E731
    inputs = {
        "eyebrow_decomposer": (img(2, 128),),
        "eyebrow_combiner": (img(2, 128), img(2, 128), torch.rand(2, 12, generator=g)),
        "face_morpher": (img(2, 192), torch.rand(2, 27, generator=g)),
        "body_morpher": (img(2, 256), torch.rand(2, 6, generator=g) * 2 - 1),
        "upscaler": (img(2, 512), img(2, 512), 0.05 * torch.randn(2, 2, 512, 512, generator=g),
                     torch.rand(2, 6, generator=g) * 2 - 1),
    }
    print("| network | params | max abs Δ (all outputs) | max abs output | seconds (both) |")
    print("|---|---:|---:|---:|---:|")
    worst = 0.0
    for role, theirs in official.items():
        theirs.eval()
        randomize(theirs, g)
        ours = kyara.networks()[role]
        ours.load_state_dict(theirs.state_dict(), strict=True)
        t0 = time.perf_counter()
        a = theirs(*inputs[role])
        b = ours(*inputs[role])
        if role == "eyebrow_combiner":
            # official order: image_combine_alpha, combine_alpha, image, morphed, α, C, warped, flow
            b = (b.eyebrow_image_combine_alpha, b.combine_alpha, b.eyebrow_image, b.morphed_eyebrow_layer,
                 b.morphed_eyebrow_layer_alpha, b.morphed_eyebrow_layer_color_change, b.warped_eyebrow_layer,
                 b.eyebrow_flow)
        elif role == "eyebrow_decomposer":
            # official order: eyebrow layer, α, C, background layer, α, C
            pass
        elif role == "face_morpher":
            b = (b.image, b.eye_alpha, b.eye_color_change, b.iris_mouth_image, b.iris_mouth_alpha,
                 b.iris_mouth_color_change, b.iris_mouth_warped, b.iris_mouth_flow)
        if len(a) != len(b):
            raise SystemExit(f"{role}: {len(a)} official outputs vs {len(b)} kyara outputs")
        d = max_diff(a, b)
        worst = max(worst, d)
        n_params = sum(p.numel() for p in ours.parameters())
        scale = max(float(x.abs().max()) for x in a)   # shows the outputs are not trivially zero
        print(f"| {role} | {n_params:,} | {d:.2e} | {scale:.3g} | {time.perf_counter() - t0:.1f} |")

    # The whole pipeline: the official poser's computation protocol vs THA4Teacher, same weights.
    from tha4.shion.core.cached_computation import ComputationState

    protocol = m07.FiveStepPoserComputationProtocol(m07.EyebrowMorphingCombiner00.EYEBROW_IMAGE_NO_COMBINE_ALPHA_INDEX)
    modules = {"eyebrow_decomposer": official["eyebrow_decomposer"],
               "eyebrow_morphing_combiner": official["eyebrow_combiner"],
               "face_morpher": official["face_morpher"], "body_morpher": official["body_morpher"],
               "upscaler": official["upscaler"]}
    image = img(1, 512)
    poses = torch.rand(args.poses, 45, generator=g)
    poses[:, 37:44] = poses[:, 37:44] * 2 - 1
    teacher = THA4Teacher(kyara, torch.device("cpu"), torch.float32)
    t0 = time.perf_counter()
    theirs = protocol.compute_func()(ComputationState(modules=modules, accumulated_modules={}, batch=[image.expand(args.poses, -1, -1, -1), poses],
                                                      outputs={}))
    ours = teacher.pose_all(image, poses).official_order()
    d = max_diff(theirs, ours)
    worst = max(worst, d)
    print(f"| whole pipeline (33 outputs, {args.poses} poses) | {sum(p.numel() for p in kyara.parameters()):,} "
          f"| {d:.2e} | {float(theirs[0].abs().max()):.3g} | {time.perf_counter() - t0:.1f} |")
    print(f"\nworst max |Δ| = {worst:.2e} (target ≤ 1e-5)")
    return 0 if worst <= 1e-5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
