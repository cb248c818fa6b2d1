"""How distinct the 16 sticker expressions are, and how big the pack is.

Renders every sticker expression at full strength with a character (default: the bundled sample's
student), measures the mean absolute difference (0..255 sRGB levels, over mid-grey) of each pair's
face box (kyara.produce.stickers.FACE_BOX, the 128×128 head box of a 512 frame), and prints the
minimum pair, each expression's nearest neighbour, and the full matrix as markdown tables.

    python benchmarks/stickers_distinct.py                       # bundled sample, current recipes
    python benchmarks/stickers_distinct.py --stills DIR          # PNGs of full 512 frames (<name>.png), e.g. an old pack
    python benchmarks/stickers_distinct.py --pack DIR            # also: sizes of a written sticker pack
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def pack_sizes(pack: Path) -> None:
    files = sorted(p for p in pack.iterdir() if p.is_file())
    by_kind: dict[str, list[int]] = {}
    for p in files:
        kind = "contact_sheet.png" if p.name == "contact_sheet.png" else p.suffix
        by_kind.setdefault(kind, []).append(p.stat().st_size)
    print(f"\nPack {pack}: {len(files)} files, {sum(map(sum, by_kind.values())) / 1e6:.2f} MB\n")
    print("| files | count | total KB | mean KB | max KB |\n|---|---:|---:|---:|---:|")
    for kind, sizes in sorted(by_kind.items()):
        print(f"| {kind} | {len(sizes)} | {sum(sizes) / 1e3:.0f} | {np.mean(sizes) / 1e3:.0f} | {max(sizes) / 1e3:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--character", default=None, help="a .kyara file (default: the bundled sample)")
    parser.add_argument("--stills", type=Path, default=None, help="measure these full-frame PNGs instead of rendering")
    parser.add_argument("--pack", type=Path, default=None, help="a sticker pack folder to list sizes of")
    parser.add_argument("--matrix", action="store_true", help="also print the full N×N matrix")
    args = parser.parse_args()

    from kyara.produce.stickers import expressions, face_distances, render_stills

    if args.stills is not None:
        from kyara.image import load_rgba

        stills = {name: load_rgba(args.stills / f"{name}.png") for name in expressions()
                  if (args.stills / f"{name}.png").exists()}
        source = str(args.stills)
    else:
        from kyara.character import SAMPLE_CHARACTER, load_character

        path = args.character or SAMPLE_CHARACTER
        stills = render_stills(load_character(path, device="cpu"))
        source = str(path)
    names, d = face_distances(stills)
    n = len(names)
    masked = d + np.diag(np.full(n, np.inf))
    i, j = np.unravel_index(np.argmin(masked), masked.shape)
    upper = d[np.triu_indices(n, 1)]
    print(f"Sticker face-box distinctness ({source}, {n} expressions): min pair {names[i]} / {names[j]} = "
          f"{d[i, j]:.2f}, median pair {np.median(upper):.2f} (mean |Δ|, 0..255 levels)\n")
    print("| expression | nearest | mean abs diff |\n|---|---|---:|")
    for a in np.argsort(masked.min(axis=1)):
        print(f"| {names[a]} | {names[int(np.argmin(masked[a]))]} | {masked[a].min():.2f} |")
    if args.matrix:
        print("\n| | " + " | ".join(names) + " |\n|---|" + "---:|" * n)
        for a in range(n):
            print(f"| {names[a]} | " + " | ".join(f"{d[a, b]:.1f}" for b in range(n)) + " |")
    if args.pack is not None:
        pack_sizes(args.pack)


if __name__ == "__main__":
    main()
