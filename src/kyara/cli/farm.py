"""`kyara farm submit|run|status`: distil many characters as Ray tasks, resumable, with status (docs/farm.md)."""
from __future__ import annotations

import argparse
import sys

from kyara.cli import HelpFormatter

EPILOG = """\
example (a laptop or one GPU machine; a local Ray starts and stops with `run`):
  kyara farm submit alice.png bob=char2.png --out farm/ --minutes 20 --stages stickers,preview
  kyara farm run farm/                        # one task per character; Ctrl-C and run again to continue
  kyara farm status farm/ --html              # or --json; writes farm/status.html

on a Ray cluster (`ray start --head` on one node, `ray start --address HEAD:6379` on the others, the
farm dir on a shared path or an fsspec URL such as s3://bucket/farm, the teacher weights on every node
via `kyara models fetch`):
  kyara farm run s3://bucket/farm --address auto
"""


def register(sub) -> None:
    p = sub.add_parser("farm", help="distil many characters on Ray (GPUs, machines), resumable, with status",
                       description="A character farm: `submit` writes a job table into an output directory, `run` "
                                   "distils every character as a Ray task (several per GPU; a job whose worker dies "
                                   "resumes from its checkpoint on another worker), writes NAME.kyara and "
                                   "NAME.eval.json and runs the optional stages; `status` shows queued / running / "
                                   "done / failed per character. Ray is optional: pip install 'kyara[farm]'.",
                       epilog=EPILOG, formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, width=100))
    farm_sub = p.add_subparsers(dest="farm_command", metavar="ACTION", required=True)
    _register_submit(farm_sub)
    _register_run(farm_sub)
    _register_status(farm_sub)


def _register_submit(farm_sub) -> None:
    from kyara.distill.config import DistillConfig
    from kyara.farm.table import STAGES

    d = DistillConfig()
    p = farm_sub.add_parser("submit", help="add characters to a farm directory (created if needed)",
                            description="Check each image (a 512×512 RGBA character), copy it into DIR/inputs/ and "
                                        "add one job per image to DIR/farm.json. Nothing is written if any argument "
                                        "is bad. DIR may be an fsspec URL (s3://..., with the filesystem's package "
                                        "installed).", formatter_class=HelpFormatter)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="character image, or NAME=IMAGE to name the character "
                                                              "(default name: the file name without extension)")
    p.add_argument("--out", required=True, metavar="DIR", help="farm directory (local path or fsspec URL)")
    p.add_argument("--minutes", type=float, help="distillation time budget per character (the run is sized to it); "
                                                 f"without it each runs {d.examples:,} examples")
    p.add_argument("--examples", type=int, default=None, help="body-morpher examples per character instead of "
                                                              "sizing the run to --minutes")
    p.add_argument("--stages", metavar="LIST", help=f"comma-separated stages after distilling: {','.join(STAGES)} "
                                                    "(sticker pack, 4-s animated WebP preview, THA4 directory)")
    p.add_argument("--teacher", default=d.teacher, help="teacher network")
    p.add_argument("--weights", metavar="DIR", help="teacher weights directory on the workers "
                                                    "(default: where `kyara models fetch` puts them on each node)")
    p.add_argument("--checkpoint-every-examples", type=int, default=10_000, metavar="N",
                   help="checkpoint interval: a job whose worker dies loses at most this many examples of training")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of every character's student and training poses")
    p.add_argument("--eval-poses", type=int, default=200, help="held-out poses for NAME.eval.json")
    p.add_argument("--lpips", action="store_true", help="LPIPS in NAME.eval.json too (each node downloads AlexNet "
                                                        "weights once)")
    p.add_argument("--fit", action="store_true", help="scale and pad non-512×512 images to 512×512")
    p.set_defaults(func=run_submit)


def _register_run(farm_sub) -> None:
    from kyara.farm.runner import JOB_GPU_GIB, MAX_JOBS_PER_GPU, RunOptions

    o = RunOptions()
    p = farm_sub.add_parser("run", help="distil every job of a farm that is not done, as Ray tasks",
                            description="Start a local Ray (or join a cluster with --address) and run one task per "
                                        "character that is not done yet. Prints a line per finished character. "
                                        "Exit status 1 if any job failed (see `kyara farm status DIR`).",
                            formatter_class=HelpFormatter)
    p.add_argument("dir", metavar="DIR", help="farm directory written by `kyara farm submit`")
    p.add_argument("--address", help="Ray cluster to join: 'auto' (the one started on this node with `ray start`) "
                                     "or HEAD_IP:6379 (default: a local Ray for this run only)")
    p.add_argument("--jobs-per-gpu", type=int, default=None, metavar="K",
                   help=f"characters distilled at once on each GPU (default: as many as fit this machine's GPU memory at "
                        f"~{JOB_GPU_GIB} GiB a job, at most {MAX_JOBS_PER_GPU}: 2 on an H200, 1 on an 80 GB GPU; 1 on a "
                        f"cluster; 2 did the most training work per GPU-second on an H200; give each more --minutes "
                        f"when K > 1)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=o.device,
                   help="auto: GPUs if the cluster has any, else CPUs")
    p.add_argument("--cpus-per-job", type=int, default=o.cpus_per_job,
                   help="CPUs Ray reserves per job (and torch threads of a CPU job)")
    p.add_argument("--max-retries", type=int, default=o.max_retries,
                   help="times a job is restarted after its worker died (it resumes from its checkpoint)")
    p.add_argument("--num-cpus", type=int, help="local Ray only: CPUs it may use (default: all)")
    p.add_argument("--num-gpus", type=int, help="local Ray only: GPUs it may use (default: all)")
    p.add_argument("--progress-every", type=float, default=o.progress_s, metavar="S",
                   help="seconds between progress lines")
    p.set_defaults(func=run_run)


def _register_status(farm_sub) -> None:
    p = farm_sub.add_parser("status", help="queued / running / done / failed per character, with PSNR and ETA",
                            description="Read the farm's job table, each job's status file and its distillation log "
                                        "(current held-out PSNR, minutes, examples; ETA = time budget or examples "
                                        "left). Works while `run` is running, from any machine that sees DIR.",
                            formatter_class=HelpFormatter)
    p.add_argument("dir", metavar="DIR", help="farm directory")
    p.add_argument("--json", action="store_true", help="print one JSON object: farm, counts, jobs")
    p.add_argument("--html", nargs="?", const="", metavar="FILE",
                   help="also write a status page (self-reloading while jobs run) to FILE (default: DIR/status.html)")
    p.set_defaults(func=run_status)


def run_submit(args) -> int:
    import importlib.util
    from dataclasses import replace

    from kyara.distill.config import DistillConfig
    from kyara.errors import KyaraError
    from kyara.farm.table import parse_stages, submit

    if args.examples is not None and args.examples < 0:
        raise KyaraError(f"--examples must be >= 0, got {args.examples}")
    if args.checkpoint_every_examples < 1:
        raise KyaraError(f"--checkpoint-every-examples must be >= 1, got {args.checkpoint_every_examples}")
    examples = args.examples if args.examples is not None else (0 if args.minutes else DistillConfig().examples)
    config = replace(DistillConfig(), teacher=args.teacher, examples=examples, seed=args.seed,
                     checkpoint_every_examples=args.checkpoint_every_examples)
    jobs = submit(args.images, args.out, config, minutes=args.minutes, stages=parse_stages(args.stages),
                  eval_poses=args.eval_poses, lpips=args.lpips, weights=args.weights, fit=args.fit)
    budget = f"{args.minutes:g} min each" if args.minutes else f"{examples:,} examples each"
    noun = "character" if len(jobs) == 1 else "characters"
    print(f"submitted {len(jobs)} {noun} to {args.out} ({budget}): {', '.join(j.name for j in jobs)}")
    if importlib.util.find_spec("ray") is None:
        print("note: `kyara farm run` needs Ray: pip install 'kyara[farm]'")
    return 0


def run_run(args) -> int:
    from kyara.farm.runner import RunOptions, run_farm

    options = RunOptions(address=args.address, device=args.device, jobs_per_gpu=args.jobs_per_gpu,
                         cpus_per_job=args.cpus_per_job, max_retries=args.max_retries, num_cpus=args.num_cpus,
                         num_gpus=args.num_gpus, progress_s=args.progress_every)
    results = run_farm(args.dir, options)
    return 1 if any(r["state"] != "done" for r in results.values()) else 0


def run_status(args) -> int:
    from kyara.farm.outdir import FarmDir
    from kyara.farm.status import farm_status, status_html, status_json, status_text

    statuses = farm_status(args.dir)
    print(status_json(args.dir, statuses) if args.json else status_text(args.dir, statuses))
    if args.html is not None:
        page = status_html(args.dir, statuses).encode()
        if args.html:
            from pathlib import Path

            from kyara.image import atomic_write_bytes

            atomic_write_bytes(Path(args.html), page)
            where = args.html
        else:
            farm = FarmDir(args.dir)
            farm.write_bytes("status.html", page)
            where = farm.url("status.html")
        print(f"wrote {where}", file=sys.stderr if args.json else sys.stdout)
    return 0
