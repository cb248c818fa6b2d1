"""The 45 THA3/THA4 pose parameters, the immutable ``Pose`` value, and expression presets.

The table below is the single home of parameter names, order, groups, ranges and left/right pairs
(``tha3-tha4-facts.md`` §1). Slices of the pose vector consumed by each network (``EYEBROW``,
``FACE``, ``ROTATION``) live here and nowhere else.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from kyara.errors import PoseError, describe_yaml_error  # PoseError is re-exported: its historical home


@dataclass(frozen=True)
class Parameter:
    index: int
    name: str
    group: str        # e.g. "eye_wink" for eye_wink_left / eye_wink_right
    category: str     # EYEBROW, EYE, IRIS_MORPH, IRIS_ROTATION, MOUTH, FACE_ROTATION, BODY_ROTATION, BREATHING
    low: float
    high: float
    side: str | None  # "left", "right" or None

    @property
    def mirror(self) -> str | None:
        """Name of the opposite-side twin, or None for unpaired parameters."""
        if self.side == "left":
            return self.name[: -len("left")] + "right"
        if self.side == "right":
            return self.name[: -len("right")] + "left"
        return None


# (group, category, arity, range). Order is THA3's; arity-2 groups expand to _left then _right.
_GROUPS: list[tuple[str, str, int, tuple[float, float]]] = [
    ("eyebrow_troubled", "EYEBROW", 2, (0.0, 1.0)),
    ("eyebrow_angry", "EYEBROW", 2, (0.0, 1.0)),
    ("eyebrow_lowered", "EYEBROW", 2, (0.0, 1.0)),
    ("eyebrow_raised", "EYEBROW", 2, (0.0, 1.0)),
    ("eyebrow_happy", "EYEBROW", 2, (0.0, 1.0)),
    ("eyebrow_serious", "EYEBROW", 2, (0.0, 1.0)),
    ("eye_wink", "EYE", 2, (0.0, 1.0)),
    ("eye_happy_wink", "EYE", 2, (0.0, 1.0)),
    ("eye_surprised", "EYE", 2, (0.0, 1.0)),
    ("eye_relaxed", "EYE", 2, (0.0, 1.0)),
    ("eye_unimpressed", "EYE", 2, (0.0, 1.0)),
    ("eye_raised_lower_eyelid", "EYE", 2, (0.0, 1.0)),
    ("iris_small", "IRIS_MORPH", 2, (0.0, 1.0)),
    ("mouth_aaa", "MOUTH", 1, (0.0, 1.0)),
    ("mouth_iii", "MOUTH", 1, (0.0, 1.0)),
    ("mouth_uuu", "MOUTH", 1, (0.0, 1.0)),
    ("mouth_eee", "MOUTH", 1, (0.0, 1.0)),
    ("mouth_ooo", "MOUTH", 1, (0.0, 1.0)),
    ("mouth_delta", "MOUTH", 1, (0.0, 1.0)),
    ("mouth_lowered_corner", "MOUTH", 2, (0.0, 1.0)),
    ("mouth_raised_corner", "MOUTH", 2, (0.0, 1.0)),
    ("mouth_smirk", "MOUTH", 1, (0.0, 1.0)),
    ("iris_rotation_x", "IRIS_ROTATION", 1, (-1.0, 1.0)),
    ("iris_rotation_y", "IRIS_ROTATION", 1, (-1.0, 1.0)),
    ("head_x", "FACE_ROTATION", 1, (-1.0, 1.0)),
    ("head_y", "FACE_ROTATION", 1, (-1.0, 1.0)),
    ("neck_z", "FACE_ROTATION", 1, (-1.0, 1.0)),
    ("body_y", "BODY_ROTATION", 1, (-1.0, 1.0)),
    ("body_z", "BODY_ROTATION", 1, (-1.0, 1.0)),
    ("breathing", "BREATHING", 1, (0.0, 1.0)),
]


def _build_table() -> tuple[Parameter, ...]:
    rows: list[Parameter] = []
    for group, category, arity, (low, high) in _GROUPS:
        sides = ("left", "right") if arity == 2 else (None,)
        for side in sides:
            name = f"{group}_{side}" if side else group
            rows.append(Parameter(len(rows), name, group, category, low, high, side))
    return tuple(rows)


PARAMETERS: tuple[Parameter, ...] = _build_table()
NAMES: tuple[str, ...] = tuple(p.name for p in PARAMETERS)
INDEX: dict[str, int] = {p.name: p.index for p in PARAMETERS}
NUM_PARAMETERS = len(PARAMETERS)
assert NUM_PARAMETERS == 45
CATEGORIES: tuple[str, ...] = tuple(dict.fromkeys(p.category for p in PARAMETERS))
GROUPS: tuple[str, ...] = tuple(dict.fromkeys(p.group for p in PARAMETERS))

# Slices of the pose vector consumed by each network (facts §1).
EYEBROW = slice(0, 12)    # eyebrow morphing combiner
FACE = slice(12, 39)      # THA3 face morpher
FACE_ALL = slice(0, 39)   # student face morpher: eyebrow + face parameters
ROTATION = slice(39, 45)  # rotator, editor, body networks

LOW = np.array([p.low for p in PARAMETERS], dtype=np.float32)
HIGH = np.array([p.high for p in PARAMETERS], dtype=np.float32)


def _check_name(name: str) -> int:
    try:
        return INDEX[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, NAMES, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else " Run `kyara pose --list-parameters` for all 45."
        raise PoseError(f"unknown pose parameter {name!r}.{hint}") from None


def _check_value(name: str, value: object) -> float:
    p = PARAMETERS[_check_name(name)]
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise PoseError(f"pose parameter {name!r}: expected a number in [{p.low:g}, {p.high:g}], got {value!r}") from None
    if not math.isfinite(v) or v < p.low - 1e-6 or v > p.high + 1e-6:
        raise PoseError(f"pose parameter {name!r} = {v:g} is outside its range [{p.low:g}, {p.high:g}]")
    return min(max(v, p.low), p.high)


def _as_vector(vector: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(vector, dtype=np.float64).reshape(-1)
    if arr.shape != (NUM_PARAMETERS,):
        raise PoseError(f"a pose vector needs {NUM_PARAMETERS} values, got {arr.size}")
    return arr


class Pose:
    """An immutable, validated assignment of the 45 pose parameters (unnamed ones are 0).

    Build with ``Pose(head_y=0.5)``, ``Pose.from_dict({...})``, ``Pose.preset("happy", 0.8)``,
    ``Pose.from_file(path)`` or ``Pose.from_vector(array)``. Out-of-range values raise ``PoseError``
    naming the parameter and its range (one rule everywhere: validate, never clamp silently;
    ``Pose.clamped`` exists for trackers whose signals overshoot by design).
    """

    __slots__ = ("_values",)

    def __init__(self, **values: float) -> None:
        vec = np.zeros(NUM_PARAMETERS, dtype=np.float32)
        for name, value in values.items():
            vec[_check_name(name)] = _check_value(name, value)
        vec.flags.writeable = False
        self._values = vec

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: Mapping[str, float]) -> "Pose":
        if not isinstance(values, Mapping):
            raise PoseError(f"a pose must be a mapping of parameter names to numbers, got {type(values).__name__}")
        return cls(**{str(k): v for k, v in values.items()})

    @classmethod
    def from_vector(cls, vector: Sequence[float] | np.ndarray) -> "Pose":
        """vector: (45,) values in THA3 order; validated against each range."""
        arr = _as_vector(vector)
        bad = ~(np.isfinite(arr) & (arr >= LOW - 1e-6) & (arr <= HIGH + 1e-6))
        if bad.any():
            _check_value(NAMES[int(np.argmax(bad))], float(arr[np.argmax(bad)]))  # raises, naming the first
        return cls._trusted(np.clip(arr, LOW, HIGH))

    @classmethod
    def clamped(cls, values: Mapping[str, float] | Sequence[float] | np.ndarray) -> "Pose":
        """Like from_dict (a mapping) or from_vector (45 values), but clamps each value into its range
        and turns NaN/inf into the range's low end (for tracker input that overshoots by design)."""
        if isinstance(values, Mapping):
            arr = np.zeros(NUM_PARAMETERS)
            for name, value in values.items():
                arr[_check_name(name)] = float(value)
        else:
            arr = _as_vector(values)
        return cls._trusted(np.where(np.isfinite(arr), np.clip(arr, LOW, HIGH), LOW))

    @classmethod
    def _trusted(cls, vector: np.ndarray) -> "Pose":
        """Wrap (45,) values already inside their ranges (no validation; the values are copied)."""
        pose = cls.__new__(cls)
        pose._values = np.array(vector, dtype=np.float32)
        pose._values.flags.writeable = False
        return pose

    @classmethod
    def preset(cls, name: str, intensity: float = 1.0) -> "Pose":
        if name not in PRESETS:
            raise PoseError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
        try:
            intensity = float(intensity)
        except (TypeError, ValueError):
            raise PoseError(f"preset intensity must be a number in [0, 1], got {intensity!r}") from None
        if not 0.0 <= intensity <= 1.0:
            raise PoseError(f"preset intensity must be in [0, 1], got {intensity}")
        return cls(**{k: v * intensity for k, v in PRESETS[name].values.items()})

    @classmethod
    def from_file(cls, path: str | Path) -> "Pose":
        """A JSON or YAML file holding one mapping of parameter names to values."""
        data = load_pose_data(path)
        if isinstance(data, list):
            raise PoseError(f"{path}: holds a list of {len(data)} poses; use it as a pose sequence")
        try:
            return cls.from_dict(_numbers_only(data))
        except PoseError as e:
            raise PoseError(f"{path}: {e}") from None

    # -- access -------------------------------------------------------------------------------
    @property
    def vector(self) -> np.ndarray:
        """(45,) float32, read-only."""
        return self._values

    def tensor(self, device=None, dtype=None):
        """(45,) torch tensor, float32 unless dtype is given."""
        import torch

        return torch.tensor(self._values, device=device, dtype=dtype or torch.float32)

    def __getitem__(self, name: str) -> float:
        return float(self._values[_check_name(name)])

    def as_dict(self, nonzero: bool = False) -> dict[str, float]:
        return {n: float(v) for n, v in zip(NAMES, self._values) if not nonzero or v != 0.0}

    def replace(self, **values: float) -> "Pose":
        return Pose(**{**self.as_dict(), **values})

    def mirrored(self) -> "Pose":
        """Swap left/right parameters and negate the yaw/roll-like angles (MIRROR_NEGATED)."""
        return Pose(**mirror_values(self.as_dict()))

    def __add__(self, other: "Pose") -> "Pose":
        """Layer two poses: values add, then clamp to each range (used for events over tracking)."""
        return Pose.clamped(self._values + other._values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pose) and bool(np.array_equal(self._values, other._values))

    def __hash__(self) -> int:
        return hash(self._values.tobytes())

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v:g}" for k, v in self.as_dict(nonzero=True).items())
        return f"Pose({inner})"

    def __iter__(self) -> Iterator[tuple[str, float]]:
        return iter(self.as_dict().items())


# Parameters whose sign flips under left/right mirroring.
MIRROR_NEGATED = ("head_y", "neck_z", "body_y", "body_z", "iris_rotation_y")


def mirror_values(values: Mapping[str, float]) -> dict[str, float]:
    """Some parameters by name → the mirror-image values: _left/_right swapped, MIRROR_NEGATED negated."""
    out = {PARAMETERS[INDEX[name]].mirror or name: v for name, v in values.items()}
    return {name: -v if name in MIRROR_NEGATED else v for name, v in out.items()}


def lerp(a: Pose, b: Pose, t: float) -> Pose:
    """Linear interpolation a→b; t in [0, 1]."""
    t = float(t)
    if not 0.0 <= t <= 1.0:
        raise PoseError(f"interpolation parameter t must be in [0, 1], got {t}")
    return Pose.clamped((1 - t) * a.vector + t * b.vector)


def interpolate(keyframes: Sequence[Pose], steps: int) -> list[Pose]:
    """`steps` poses evenly spread along the piecewise-linear path through `keyframes` (ends included)."""
    if len(keyframes) == 0:
        raise PoseError("interpolate needs at least one keyframe")
    if steps < 1:
        raise PoseError("interpolate needs steps >= 1")
    if len(keyframes) == 1 or steps == 1:
        return [keyframes[0]] * steps
    out = []
    segments = len(keyframes) - 1
    for i in range(steps):
        s = i / (steps - 1) * segments
        k = min(int(s), segments - 1)
        out.append(lerp(keyframes[k], keyframes[k + 1], s - k))
    return out


def stack(poses: Iterable[Pose]):
    """(N, 45) float32 torch tensor from poses."""
    import torch

    return torch.from_numpy(np.stack([p.vector for p in poses]).astype(np.float32))


# -- pose files ---------------------------------------------------------------------------------
MAX_POSE_FILE_BYTES = 16 * 1024 * 1024


def load_pose_data(path: str | Path):
    """Parse a JSON (.json) or YAML (.yaml/.yml) pose file; returns a dict or a list of dicts."""
    path = Path(path)
    if path.is_dir():
        raise PoseError(f"{path}: is a folder; give a JSON or YAML pose file")
    if not path.is_file():
        raise PoseError(f"pose file not found: {path}")
    if path.stat().st_size > MAX_POSE_FILE_BYTES:
        raise PoseError(f"{path}: pose file larger than {MAX_POSE_FILE_BYTES // 2**20} MiB")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PoseError(f"{path}: cannot read pose file as UTF-8 text: {e}") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # json.JSONDecodeError, yaml.YAMLError
        raise PoseError(f"{path}: not valid {'YAML' if path.suffix.lower() in ('.yaml', '.yml') else 'JSON'}: "
                        f"{describe_yaml_error(e)}") from None
    if isinstance(data, dict) and "poses" in data and isinstance(data["poses"], list):
        data = data["poses"]
    if not isinstance(data, (dict, list)):
        raise PoseError(f"{path}: expected a mapping of parameter names to numbers, or a list of them")
    return data


def load_pose_sequence(path: str | Path) -> list[Pose]:
    """A pose file holding a list of poses (or {"poses": [...]}); a single mapping gives one pose.

    Each item is a mapping of parameter names to values, optionally with a "preset" (and
    "intensity") that the named values are layered over.
    """
    data = load_pose_data(path)
    items = data if isinstance(data, list) else [data]
    poses = []
    for i, item in enumerate(items):
        try:
            poses.append(_pose_from_item(item))
        except PoseError as e:
            raise PoseError(f"{path}: pose #{i}: {e}") from None
    if not poses:
        raise PoseError(f"{path}: the pose list is empty")
    return poses


def _numbers_only(item: Mapping, text_keys: tuple[str, ...] = ()) -> Mapping:
    """Refuse file values that are not plain numbers: float() would quietly accept YAML's '0.5'
    (a string) and true (a bool, = 1). `text_keys` (e.g. "preset") may hold text."""
    for key, value in item.items():
        if str(key) in text_keys:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, bool):
                hint = "true/false are not numbers; write 1 or 0"
            elif isinstance(value, str):
                hint = "a quoted string; write the number without quotes"
            elif value is None:
                hint = "an empty value"
            else:
                hint = f"a {type(value).__name__}"
            raise PoseError(f"{key}: expected a number, got {value!r} ({hint})")
    return item


def _pose_from_item(item) -> Pose:
    if not isinstance(item, Mapping):
        raise PoseError(f"expected a mapping of parameter names to numbers, got {type(item).__name__}")
    item = {str(k): v for k, v in _numbers_only(item, ("preset",)).items()}  # YAML keys may be non-strings
    base = Pose()
    if "preset" in item:
        base = Pose.preset(str(item.pop("preset")), item.pop("intensity", 1.0))
    return base.replace(**item) if item else base


def save_pose(pose: Pose, path: str | Path) -> None:
    from kyara.image import atomic_write_bytes

    atomic_write_bytes(Path(path), json.dumps(pose.as_dict(nonzero=True), indent=2).encode())


# -- presets ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preset:
    description: str
    values: Mapping[str, float]


def both(group: str, value: float) -> dict[str, float]:
    """{group_left: value, group_right: value}: one value for a symmetric pair (e.g. "eye_wink")."""
    return {f"{group}_left": value, f"{group}_right": value}


PRESETS: dict[str, Preset] = {
    "neutral": Preset("all parameters at rest", {}),
    "happy": Preset("closed-eye smile ('^^'), happy brows, open smiling mouth",
                    {**both("eyebrow_happy", 1.0), **both("eye_happy_wink", 1.0), "mouth_aaa": 0.4,
                     **both("mouth_raised_corner", 0.8)}),
    "sad": Preset("troubled brows, relaxed eyes, lowered mouth corners, head slightly down",
                  {**both("eyebrow_troubled", 1.0), **both("eye_relaxed", 0.5), **both("mouth_lowered_corner", 1.0),
                   "head_x": -0.3}),
    "angry": Preset("angry brows, unimpressed eyes, 'delta' mouth",
                    {**both("eyebrow_angry", 1.0), **both("eye_unimpressed", 0.5), "mouth_delta": 0.6,
                     **both("mouth_lowered_corner", 0.5)}),
    "surprised": Preset("raised brows, wide eyes with small irises, round open mouth",
                        {**both("eyebrow_raised", 1.0), **both("eye_surprised", 1.0), **both("iris_small", 0.5),
                         "mouth_ooo": 0.8}),
    "wink": Preset("left eye winks, smiling mouth, head tilted",
                   {"eye_wink_left": 1.0, **both("mouth_raised_corner", 0.6), "neck_z": 0.3}),
    "sleepy": Preset("relaxed, half-closed eyes, lowered brows, head drooping",
                     {**both("eye_relaxed", 1.0), **both("eyebrow_lowered", 0.5), "head_x": -0.5, "neck_z": 0.2,
                      "mouth_uuu": 0.2}),
    "smug": Preset("unimpressed eyes, smirk, serious brows, head turned slightly",
                   {**both("eye_unimpressed", 0.7), "mouth_smirk": 1.0, **both("eyebrow_serious", 0.5), "head_y": 0.3}),
    "laugh": Preset("happy closed eyes, wide open mouth, head tilted back",
                    {**both("eye_happy_wink", 1.0), **both("eyebrow_happy", 1.0), "mouth_aaa": 1.0,
                     **both("mouth_raised_corner", 1.0), "head_x": 0.3}),
    "troubled": Preset("troubled brows, raised lower eyelids, small 'eee' mouth",
                       {**both("eyebrow_troubled", 1.0), **both("eye_raised_lower_eyelid", 0.6), "mouth_eee": 0.4,
                        **both("mouth_lowered_corner", 0.4)}),
}
for _p in PRESETS.values():  # presets are validated at import so a typo cannot ship
    Pose(**_p.values)
