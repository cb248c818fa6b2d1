"""Browser weights (.kyw): one student character as a single binary the page can validate and map.

Layout (all integers little-endian; see docs/file-format.md, "Browser weights (.kyw)"):
  bytes 0-3    magic b"KYW\\x00"
  bytes 4-7    uint32 format version (FORMAT_VERSION)
  bytes 8-11   uint32 header length H in bytes (UTF-8 JSON, space-padded so the data starts 16-aligned)
  bytes 12-15  uint32 data length D
  12+4 .. +H   header JSON: {"format", "name", "omega_0", "face_box", "canvas", "tensors": {name:
               {"dtype", "shape", "offset", "nbytes"}}}; offsets are relative to the data start
  then D bytes tensor data, each tensor 16-byte aligned

Tensors: the student's weights under their .kyara names with 1×1-conv weights flattened to
(out, in) (float16 or float32, see ``WEIGHT_DTYPES``); ``character_image`` uint8 (512, 512, 4) sRGB
straight RGBA (the page converts it to model space exactly as kyara.image.rgba_u8_to_tensor);
optional ``body_region`` uint8 (32768,) packbits of the (512, 512) region mask, row-major.

The lite student (kyara.student.lite.LiteStudent, issue 15), when exported (``lite=True``, the
default): header ``"lite": {"body_grid": G, "body_sizes": [...]}`` (the body levels run on these
grids, coarse to fine, e.g. 8, 24, 128 (LiteConfig today), instead of 128, 256, 512, and the G×G head outputs are
upsampled bilinearly to the region), tensor ``lite_face_mask``
uint8 (2048,) packbits of the (128, 128) movable face pixels (row-major; evaluated per frame) and
``lite_face_constant`` (128, 128, 4) in the weights' dtype: the model-space face used elsewhere.
Pages that predate them ignore these (same format version).
"""
from __future__ import annotations

import json
import struct
import weakref
from dataclasses import dataclass

import numpy as np

MAGIC = b"KYW\x00"
FORMAT_NAME = "kyara-web-student"
FORMAT_VERSION = 1
PREAMBLE = struct.Struct("<4sIII")     # magic, version, header bytes, data bytes
ALIGN = 16
MAX_HEADER_BYTES = 1 << 20
MAX_FILE_BYTES = 32 << 20              # the page refuses anything larger before parsing
DTYPES = {"float16": np.float16, "float32": np.float32, "uint8": np.uint8}
WEIGHT_DTYPES = ("float16", "float32")


class WebWeightsError(ValueError):
    """A .kyw blob is malformed; the message says what and where."""


@dataclass(frozen=True)
class WebWeights:
    """A parsed .kyw blob: header dict and tensors as numpy arrays (float32 for weights)."""
    header: dict
    tensors: dict[str, np.ndarray]


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def student_tensors(character) -> dict[str, np.ndarray]:
    """The character's student weights as float32 numpy arrays: official names, 1×1 convs as (out, in)."""
    if not character.is_student:
        raise WebWeightsError("only distilled (student) characters run in the browser")
    student = character.poser
    out = {}
    for part in ("face_morpher", "body_morpher"):
        for key, value in getattr(student, part).state_dict().items():
            array = value.detach().float().cpu().numpy()
            if array.ndim == 4:
                array = array.reshape(array.shape[0], array.shape[1])
            out[f"{part}.{key}"] = np.ascontiguousarray(array)
    return out


_LITE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # Student → (weights key, LiteStudent)


def lite_student(student):
    """The LiteStudent of student (itself when it is one), its face plan computed (a few seconds on a
    CPU, once per student and weights: cached)."""
    from kyara.student.lite import LiteStudent

    if isinstance(student, LiteStudent):
        student.face_plan()
        return student
    key = tuple((p.data_ptr(), p._version) for p in student.parameters())
    cached = _LITE.get(student)
    if cached is None or cached[0] != key:
        lite = LiteStudent(student)
        lite.face_plan()
        _LITE[student] = cached = (key, lite)
    return cached[1]


def lite_tensors(student, dtype) -> tuple[dict, dict[str, np.ndarray]]:
    """(header "lite" entry, tensors) of the lite student's browser plan (module docstring)."""
    lite = lite_student(student)
    plan = lite.face_plan()
    size = plan.constant.shape[-1]
    mask = np.zeros(size * size, bool)
    mask[plan.pixels.output.index.cpu().numpy()] = True
    constant = plan.constant.detach().float().cpu().numpy().transpose(1, 2, 0)      # (S, S, 4)
    sizes = [int(level.size) for level in lite.coarse(lite.body_pixels()).pixels.levels]   # its body grids
    return ({"body_grid": sizes[-1], "body_sizes": sizes},
            {"lite_face_mask": np.packbits(mask), "lite_face_constant": np.ascontiguousarray(constant).astype(dtype)})


def student_to_web_bytes(character, weights_dtype: str = "float16", lite: bool = True) -> bytes:
    """Character (a student) → .kyw bytes. weights_dtype: "float16" (default; costs < 0.01 dB, see
    docs/benchmarks.md) or "float32". lite: also store the lite student's plan (module docstring;
    computing its face plan takes seconds on a CPU the first time)."""
    from kyara.geometry import CANVAS, STUDENT_FACE_BOX
    from kyara.image import tensor_to_rgba_u8
    from kyara.nn.siren import OMEGA_0

    if weights_dtype not in WEIGHT_DTYPES:
        raise WebWeightsError(f"weights dtype must be one of {WEIGHT_DTYPES}, got {weights_dtype!r}")
    if getattr(character, "premultiplied", False):
        # The shaders feed the stored (straight) image; a premultiplied-colour student (an imported
        # THA4 directory) would be wrong at every soft edge, so refuse rather than render it badly.
        raise WebWeightsError(f"{character.name}: premultiplied-colour students (imported THA4 directories) "
                              "are not supported by the browser renderer yet")
    arrays: dict[str, np.ndarray] = {k: v.astype(DTYPES[weights_dtype]) for k, v in student_tensors(character).items()}
    arrays["character_image"] = tensor_to_rgba_u8(character.image)
    region = getattr(character.poser, "region", None)
    if region is not None:
        arrays["body_region"] = np.packbits(region.detach().cpu().numpy().reshape(-1))
    lite_header = None
    if lite:
        lite_header, extra = lite_tensors(character.poser, DTYPES[weights_dtype])
        arrays.update(extra)
    box = STUDENT_FACE_BOX
    tensors, chunks, offset = {}, [], 0
    for name, array in arrays.items():
        raw = np.ascontiguousarray(array).tobytes()
        tensors[name] = {"dtype": str(array.dtype), "shape": list(array.shape), "offset": offset, "nbytes": len(raw)}
        chunks.append(raw + b"\0" * (_align(len(raw)) - len(raw)))
        offset += _align(len(raw))
    header = {"format": FORMAT_NAME, "name": character.name, "omega_0": OMEGA_0, "canvas": CANVAS,
              "face_box": {"top": box.top, "left": box.left, "height": box.height, "width": box.width},
              "tensors": tensors}
    if lite_header is not None:
        header["lite"] = lite_header
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (_align(PREAMBLE.size + len(text)) - PREAMBLE.size - len(text))
    return PREAMBLE.pack(MAGIC, FORMAT_VERSION, len(text), offset) + text + b"".join(chunks)


def parse_web_bytes(data: bytes) -> WebWeights:
    """.kyw bytes → WebWeights, with the same checks as the page's loader (render/kyw.js)."""
    if len(data) > MAX_FILE_BYTES:
        raise WebWeightsError(f"weights file is {len(data)} bytes, more than the {MAX_FILE_BYTES} allowed")
    if len(data) < PREAMBLE.size:
        raise WebWeightsError(f"weights file is {len(data)} bytes, too short for the {PREAMBLE.size}-byte preamble")
    magic, version, header_len, data_len = PREAMBLE.unpack_from(data)
    if magic != MAGIC:
        raise WebWeightsError(f"not a kyara browser weights file (magic {magic!r}, expected {MAGIC!r})")
    if version != FORMAT_VERSION:
        raise WebWeightsError(f"browser weights format version {version} is not supported (this reader: {FORMAT_VERSION})")
    if header_len > MAX_HEADER_BYTES or PREAMBLE.size + header_len + data_len != len(data):
        raise WebWeightsError(f"weights file sizes disagree: header {header_len} + data {data_len} bytes, "
                              f"file {len(data)} bytes")
    try:
        header = json.loads(data[PREAMBLE.size:PREAMBLE.size + header_len])
    except (ValueError, UnicodeDecodeError) as e:
        raise WebWeightsError(f"weights header is not JSON: {e}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME or not isinstance(header.get("tensors"), dict):
        raise WebWeightsError(f"weights header is not a {FORMAT_NAME} header")
    base = PREAMBLE.size + header_len
    tensors = {}
    for name, spec in header["tensors"].items():
        dtype = DTYPES.get(spec.get("dtype"))
        shape = spec.get("shape")
        if dtype is None or not isinstance(shape, list):
            raise WebWeightsError(f"tensor {name!r}: bad dtype or shape")
        count = int(np.prod(shape))
        offset, nbytes = spec.get("offset"), spec.get("nbytes")
        if nbytes != count * np.dtype(dtype).itemsize or offset % ALIGN or offset + nbytes > data_len:
            raise WebWeightsError(f"tensor {name!r}: offset {offset} / {nbytes} bytes do not fit its shape or the data")
        array = np.frombuffer(data, dtype=dtype, count=count, offset=base + offset).reshape(shape)
        tensors[name] = array.astype(np.float32) if dtype is not np.uint8 else array
    return WebWeights(header, tensors)
