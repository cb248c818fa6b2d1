"""The farm's job table (``DIR/farm.json``) and ``submit``: one job per character.

The table is the farm's only shared plan: workers read their job from it, ``kyara farm status``
reads it with each job's own status file. Each submitted image is checked (it must load as a
512×512 RGBA character) and copied into ``DIR/inputs/``, so a job runs on any node that sees DIR,
not only on the machine that submitted it.

farm.json: {"format": "kyara-farm", "version": 1, "jobs": [Job as a dict, ...]}.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kyara.distill.config import DistillConfig
from kyara.errors import KyaraError
from kyara.farm.outdir import FarmDir

TABLE_NAME = "farm.json"
FORMAT = "kyara-farm"
VERSION = 1
STAGES = ("stickers", "preview", "export")   # optional per-character stages, run in this order
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Job:
    """One character: `image` is its input inside the farm dir; the config is the run's whole recipe
    (DistillConfig JSON: examples=0 sizes the run to `minutes`)."""
    name: str
    image: str                         # relative path inside the farm dir, e.g. "inputs/alice.png"
    source: str                        # the path it was submitted from (for the user)
    config: str                        # DistillConfig.to_json()
    minutes: float | None = None       # time budget of the distillation (resumed sessions included)
    stages: tuple[str, ...] = ()
    eval_poses: int = 200              # held-out poses for DIR/<name>.eval.json
    lpips: bool = False                # LPIPS in the evaluation (downloads AlexNet weights once per node)
    weights: str | None = None         # teacher weights directory on the workers (None: `kyara models fetch`'s)
    extra: dict = field(default_factory=dict)

    @property
    def distill_config(self) -> DistillConfig:
        return DistillConfig.from_json(self.config)

    def as_dict(self) -> dict:
        return {**asdict(self), "config": json.loads(self.config), "stages": list(self.stages)}

    @classmethod
    def from_dict(cls, data: dict, source: str) -> "Job":
        try:
            config = data.get("config")
            job = cls(**{**data, "stages": tuple(data.get("stages", ())),
                         "config": json.dumps(config, sort_keys=True) if isinstance(config, dict) else config})
            job.distill_config   # noqa: B018 (validates the stored recipe)
        except (TypeError, ValueError) as e:
            raise KyaraError(f"{source}: job {data.get('name', '?')!r} is malformed ({e})") from None
        return job


def read_table(farm: FarmDir) -> dict[str, Job]:
    """name → Job, in submission order. A missing or foreign table is a one-line KyaraError."""
    source = farm.url(TABLE_NAME)
    try:
        data = json.loads(farm.read_bytes(TABLE_NAME))
    except FileNotFoundError:
        raise KyaraError(f"{farm.url()}: not a farm directory (no {TABLE_NAME}); create one with "
                         "`kyara farm submit IMAGES... --out DIR`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise KyaraError(f"{source}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise KyaraError(f"{source}: not a kyara farm table (format {FORMAT!r} expected)")
    if data.get("version") != VERSION:
        raise KyaraError(f"{source}: farm table version {data.get('version')!r}; this kyara reads version {VERSION}")
    jobs = [Job.from_dict(j, source) for j in data.get("jobs", [])]
    return {job.name: job for job in jobs}


def write_table(farm: FarmDir, jobs: dict[str, Job]) -> None:
    data = {"format": FORMAT, "version": VERSION, "jobs": [j.as_dict() for j in jobs.values()]}
    farm.write_bytes(TABLE_NAME, (json.dumps(data, indent=1) + "\n").encode())


def parse_stages(text: str | None) -> tuple[str, ...]:
    """'stickers,export' → ('stickers', 'export') in STAGES order; an unknown name is a KyaraError."""
    if not text:
        return ()
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in STAGES]
    if unknown:
        raise KyaraError(f"--stages: unknown stage {unknown[0]!r}; choose from {', '.join(STAGES)}")
    return tuple(s for s in STAGES if s in names)


def name_and_path(spec: str) -> tuple[str, Path]:
    """'NAME=PATH' or 'PATH' (name: the file's stem) → (name, path); the name is checked."""
    name, sep, rest = spec.partition("=")
    if sep and "/" not in name and name:
        path = Path(rest)
    else:
        name, path = Path(spec).stem, Path(spec)
    if not NAME_RE.match(name):
        raise KyaraError(f"{spec}: character name {name!r} must be 1-64 letters, digits, '.', '_' or '-' "
                         "(starting with a letter or digit); name it with NAME=PATH")
    return name, path


def submit(images: list[str], out: str, config: DistillConfig, *, minutes: float | None = None,
           stages: tuple[str, ...] = (), eval_poses: int = 200, lpips: bool = False, weights: str | None = None,
           fit: bool = False) -> list[Job]:
    """Add one job per image to the farm at `out` (created if needed) and return the new jobs.

    Every image is checked first (exists, loads as a 512×512 RGBA character, or is fitted with fit=True)
    and its name must be new: one bad argument is an error and nothing is written. config is the
    distillation recipe (examples=0 needs minutes). The inputs are copied to DIR/inputs/NAME.png.
    """
    from kyara.image import encode_image, load_rgba

    if not images:
        raise KyaraError("no images given")
    if config.examples == 0 and not minutes:
        raise KyaraError("--minutes is needed when --examples is 0 (the run is sized to the time budget)")
    if minutes is not None and not 0 < minutes < 1e6:
        raise KyaraError(f"--minutes must be a positive number of minutes, got {minutes:g}")
    if not 1 <= eval_poses <= 100_000:
        raise KyaraError(f"--eval-poses must be in 1..100000, got {eval_poses}")
    farm = FarmDir(out)
    jobs = read_table(farm) if farm.exists(TABLE_NAME) else {}
    new: dict[str, tuple[Job, bytes]] = {}
    for spec in images:
        name, path = name_and_path(spec)
        if name in jobs or name in new:
            raise KyaraError(f"{spec}: a character named {name!r} is already in {farm.url()}; name this one "
                             "with NAME=PATH")
        if not path.is_file():
            raise KyaraError(f"{path}: no such image file")
        rgba = load_rgba(path, fit=fit)   # ImageError names the file and what was expected
        # the user's exact bytes when they are already a 512×512 PNG; otherwise the checked pixels as PNG
        data = path.read_bytes() if path.suffix.lower() == ".png" and not fit else encode_image(rgba, "PNG")
        job = Job(name=name, image=f"inputs/{name}.png", source=str(path), config=config.to_json(),
                  minutes=minutes, stages=tuple(stages), eval_poses=eval_poses, lpips=lpips, weights=weights)
        new[name] = (job, data)
    for job, data in new.values():
        farm.write_bytes(job.image, data)
    write_table(farm, {**jobs, **{name: job for name, (job, _) in new.items()}})
    return [job for job, _ in new.values()]


__all__ = ["STAGES", "Job", "parse_stages", "read_table", "submit", "write_table"]
