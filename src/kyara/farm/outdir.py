"""FarmDir: a farm's output directory, a local path or any fsspec URL (s3://, gs://, file://, ...).

Every write is atomic: locally through kyara.image.atomic_write_bytes; on an fsspec filesystem the
bytes go to a hidden temporary name beside the target and are then moved onto it (object stores
write a whole object at once anyway). fsspec is optional and imported only for URLs.

Paths inside the directory are relative, '/'-separated strings ("alice/status.json").
"""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

from kyara.errors import KyaraError, OutputError
from kyara.image import atomic_write_bytes


def is_url(location: str) -> bool:
    return "://" in str(location)


class FarmDir:
    """The farm directory at `location` (a path or an fsspec URL)."""

    def __init__(self, location: str | os.PathLike):
        self.location = str(location)
        self._fs = None
        if is_url(self.location):
            try:
                import fsspec
            except ImportError:
                raise KyaraError(f"{self.location}: a URL output needs fsspec: pip install fsspec (plus the "
                                 "filesystem's package, e.g. s3fs for s3://)") from None
            try:
                self._fs, self._root = fsspec.core.url_to_fs(self.location)
            except (ImportError, ValueError) as e:   # unknown protocol or its package missing
                raise KyaraError(f"{self.location}: cannot open this URL with fsspec ({e})") from None
            self._root = self._root.rstrip("/")
        else:
            self._root = str(Path(self.location).expanduser())

    @property
    def is_local(self) -> bool:
        return self._fs is None

    def path(self, rel: str = "") -> str:
        """The full path (local) or the filesystem path (URL) of `rel`."""
        return f"{self._root}/{rel}" if rel else self._root

    def url(self, rel: str = "") -> str:
        """What to show a user for `rel`: a local path, or the URL."""
        if self.is_local:
            return self.path(rel)
        return f"{self.location.rstrip('/')}/{rel}" if rel else self.location

    def exists(self, rel: str) -> bool:
        return os.path.exists(self.path(rel)) if self.is_local else self._fs.exists(self.path(rel))

    def read_bytes(self, rel: str) -> bytes:
        try:
            if self.is_local:
                return Path(self.path(rel)).read_bytes()
            return self._fs.cat_file(self.path(rel))
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.url(rel)}: no such file") from None

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write `data` to `rel` atomically (readers see the old file or the new one, never a part)."""
        if self.is_local:
            atomic_write_bytes(Path(self.path(rel)), data)
            return
        target = self.path(rel)
        parent, _, name = target.rpartition("/")
        tmp = f"{parent}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            self._fs.makedirs(parent, exist_ok=True)
            self._fs.pipe_file(tmp, data)
            self._fs.mv(tmp, target)
        except OSError as e:
            raise OutputError.writing(self.url(rel), e) from e

    def put_file(self, local: str | os.PathLike, rel: str) -> None:
        """Copy a local file to `rel`, atomically."""
        if self.is_local and os.path.abspath(local) == os.path.abspath(self.path(rel)):
            return
        self.write_bytes(rel, Path(local).read_bytes())

    def put_tree(self, local: str | os.PathLike, rel: str) -> None:
        """Replace the folder `rel` with a copy of the local folder: every file is written atomically and
        the folder appears under its name only once complete locally (a rename); on a URL files appear
        one by one, each whole."""
        local = Path(local)
        if self.is_local:
            target = Path(self.path(rel))
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=self._ensure_parent(target)))
            try:
                os.chmod(staging, 0o755)   # mkdtemp's 0700 would hide the folder from other users of a shared farm
                shutil.copytree(local, staging, dirs_exist_ok=True)
                old = None
                if target.exists():
                    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
                    os.replace(target, old)
                os.replace(staging, target)
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError as e:
                shutil.rmtree(staging, ignore_errors=True)
                raise OutputError.writing(target, e) from e
            return
        for file in sorted(p for p in local.rglob("*") if p.is_file()):
            self.write_bytes(f"{rel}/{file.relative_to(local).as_posix()}", file.read_bytes())

    def _ensure_parent(self, target: Path) -> Path:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError.writing(target, e) from e
        return target.parent
