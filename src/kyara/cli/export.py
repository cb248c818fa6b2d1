"""`kyara export CHARACTER.kyara --tha4-dir OUT/`: write the official THA4 character_model layout."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("export", help="export a .kyara student to the official THA4 character_model directory",
                       description="Writes character_model.yaml, character.png, face_morpher.pt and body_morpher.pt, "
                                   "loadable by the THA4 demo apps. Students distilled on their character region "
                                   "(the default) are untrained outside it, which the official runtime also "
                                   "renders; distill with --no-region for a student meant for it.")
    p.add_argument("character", help=".kyara file")
    p.add_argument("--tha4-dir", required=True, help="output directory")
    p.add_argument("--allow-straight", action="store_true",
                   help="export a straight-colour student (distilled from THA3) although the official runtime feeds "
                        "premultiplied colour: soft edges render off (measured figures in the note); without it "
                        "such a student is refused")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys
    import warnings

    from kyara.character import STRAIGHT_EXPORT_NOTE, export_tha4_directory, load_character

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        character = load_character(args.character)
        out = export_tha4_directory(character, args.tha4_dir, allow_straight=args.allow_straight)
    for w in caught:   # one clean line each (e.g. a region-trained student), not a Python traceback-style warning
        print(f"warning: {w.message}", file=sys.stderr)
    if not character.premultiplied:   # the official runtime premultiplies colour (issue 17)
        print(f"note: {STRAIGHT_EXPORT_NOTE}", file=sys.stderr)
    print(f"wrote THA4 character_model to {out}")
    return 0
