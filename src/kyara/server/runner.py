"""Run a `kyara live` session: bind the port, load the character, start the pose sources, and
serve ``kyara.server.app.create_app`` until interrupted (``run_live``, what `kyara live` calls).

The top of the live stack: it imports the engine (``kyara.live``) and the app, both of which read
``kyara.live.session.LiveConfig``; nothing in ``kyara.live`` imports the server.
"""
from __future__ import annotations

import errno
import socket
from pathlib import Path

from kyara.drive.ifacialmocap import IFACIALMOCAP_PORT
from kyara.errors import KyaraError
from kyara.live.session import DEFAULT_TEACHER, WILDCARD_HOSTS, LiveConfig


def bind_listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (not yet listening), so a taken port fails at once with a
    clear KyaraError instead of after the model load. uvicorn serves on it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # like uvicorn: restart without TIME_WAIT
        sock.bind((host or "0.0.0.0", port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise KyaraError(f"port {port} on {host} is in use (another program, maybe another `kyara live`, listens "
                             "there); pick another with --port N, or --port 0 for a free one") from None
        if e.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            raise KyaraError(f"--host {host}: not an address of this machine ({e.strerror})") from None
        if e.errno == errno.EACCES:
            raise KyaraError(f"port {port} on {host}: permission denied (ports below 1024 need privileges)") from None
        raise KyaraError(f"cannot bind {host}:{port}: {e.strerror or e}") from None
    except socket.gaierror as e:
        sock.close()
        raise KyaraError(f"--host {host}: {e}") from None
    return sock


def load_live_character(config: LiveConfig, print_fn=print):
    """A student from a .kyara file (default: the bundled sample), or with ``teacher`` a slow
    teacher-backed character from an image."""
    from kyara import character as character_module
    from kyara.poser import pick_device

    device_name = str(pick_device(config.device))
    character = config.character
    if character is None:
        sample = getattr(character_module, "SAMPLE_CHARACTER", None)
        if sample is None or not Path(sample).exists():
            raise KyaraError("no CHARACTER given and no bundled sample character is installed; "
                             "pass a .kyara file (make one with `kyara distill IMAGE`)")
        character = sample
    path = Path(character)
    if not path.exists():
        raise KyaraError(f"{path}: character file not found")
    if config.teacher:
        if character_module.is_student_path(path):
            raise KyaraError(f"{path}: --teacher needs a character image (.png, .webp, .jpg), not a distilled character")
        print_fn(f"warning: --teacher renders with the full {DEFAULT_TEACHER} model on {device_name}: expect a few "
                 "frames per second on CPU and ~20-40 fps on a GPU; distill a student for real-time use")
    elif not character_module.is_student_path(path):
        raise KyaraError(f"{path} is an image; distill it first (`kyara distill {path}`) or pass --teacher "
                         "to drive it with the slow teacher model")
    loaded = character_module.load(path, teacher=DEFAULT_TEACHER, device=device_name)
    if config.teacher:
        return loaded
    from kyara.student.lite import use_student

    use_student(loaded, config.student)
    if hasattr(loaded.poser, "face_plan"):
        loaded.poser.face_plan()   # the lite plan's one-time face analysis, before the first frame
    return loaded


def render_mode(config: LiveConfig, character) -> tuple[str, str | None]:
    """Where frames are drawn for this character: ("browser" | "server", why server or None).

    --render browser|server is taken as given; auto (the default) is browser for a student the pages
    can run (each page still decides: one without WebGPU/WebGL2, or refusing the weights, asks for
    server frames and says so) and server for the teacher or a premultiplied-colour student (the
    browser weights refuse those, kyara.web.weights)."""
    if config.render != "auto":
        return config.render, None
    if not getattr(character, "is_student", False):
        return "server", "not a distilled student: only students run in a page"
    if getattr(character, "premultiplied", False):
        return "server", "premultiplied-colour students do not run in a page yet"
    return "browser", None


def build_sources(config: LiveConfig, print_fn=print) -> list:
    """Start the pose sources the config asks for, in mixer order (later ones win where they overlap,
    so the audio and microphone mouths override a face tracker's): webcam, iFacialMocap, VMC, audio
    file, microphone. Tracker ports 0 pick free ports.

    A UDP port already in use is a warning, not fatal. A source the user asked for by name (webcam,
    audio, microphone) that cannot start is a KyaraError; sources already started are stopped first.
    """
    sources = []
    candidates = []
    listen_host, phone_ip = config.listen_host, config.ifacialmocap_phone_ip
    if config.webcam is not None:
        from kyara.drive.webcam import WebcamSource

        candidates.append((f"webcam {config.webcam} (MediaPipe face tracking; use Calibrate while looking at the "
                           "camera)", lambda: WebcamSource(config.webcam, model_path=config.webcam_model, log=print_fn)))
    if config.trackers:
        from kyara.drive.ifacialmocap import IFacialMocapReceiver
        from kyara.drive.vmc import VmcReceiver

        def make_ifacialmocap():
            try:
                return IFacialMocapReceiver(port=config.ifacialmocap_port, host=listen_host, phone_ip=phone_ip)
            except ValueError as e:  # phone_ip malformed, or a LAN phone with a loopback-only receiver
                raise KyaraError(f"--ifacialmocap-phone-ip: {e}") from None

        to_phone = f", start message to {phone_ip}:{IFACIALMOCAP_PORT}" if phone_ip else ""
        candidates.append((f"iFacialMocap UDP {listen_host}:{config.ifacialmocap_port}{to_phone}", make_ifacialmocap))
        candidates.append((f"VMC (OSC/UDP) {listen_host}:{config.vmc_port}",
                           lambda: VmcReceiver(port=config.vmc_port, host=listen_host)))
    if config.audio is not None:
        from kyara.drive.audio import AudioFileSource

        candidates.append((f"audio file {config.audio} ({'looping' if config.audio_loop else 'once'}; mouth only, "
                           "no sound)", lambda: AudioFileSource(config.audio, loop=config.audio_loop)))
    if config.uses_mic:
        from kyara.drive.audio import MicrophoneSource

        device = config.mic_device
        candidates.append((f"microphone {device if device is not None else '(default input)'}",
                           lambda: MicrophoneSource(device=device)))
    try:
        for label, make in candidates:
            source = make()
            try:
                source.start()
            except OSError as e:
                print_fn(f"warning: {label} not started: {e}")
                continue
            print_fn(f"listening: {label}")
            sources.append(source)
    except BaseException:
        for source in sources:
            source.stop()
        raise
    return sources


def run_live(config: LiveConfig, print_fn=print) -> None:
    """Serve the live studio until interrupted (what `kyara live` runs).

    Order matters for the user: the port is bound first (a taken port fails in milliseconds), then
    the character loads (seconds), then the sources start and uvicorn serves.
    """
    import threading
    import webbrowser

    import uvicorn

    from kyara.drive.idle import IdleConfig, IdleMotion
    from kyara.drive.mixer import MixerConfig, PoseMixer
    from kyara.live.engine import LiveEngine
    from kyara.server.app import create_app, uvicorn_config

    sock = bind_listen_socket(config.host, config.port)
    sources: list = []
    engine = None
    try:
        port = sock.getsockname()[1]
        ch = load_live_character(config, print_fn)
        mixer = PoseMixer(MixerConfig(), IdleMotion(IdleConfig()))
        sources = build_sources(config, print_fn)
        for source in sources:
            mixer.add_source(source)
        render, why_server = render_mode(config, ch)
        device_type = getattr(getattr(ch, "device", None), "type", "cpu")
        engine = LiveEngine(ch, mixer, fps=config.fps, encoders=config.encoders, render=render,
                            frame_fps=config.frame_fps(device_type))
        server = uvicorn.Server(uvicorn_config(create_app(engine, config), config))

        def announce() -> None:
            while not server.started:
                if server.should_exit:
                    return
                threading.Event().wait(0.05)
            print_fn(f"kyara live: {getattr(ch, 'name', 'character')} on {engine.fps:g} fps target")
            if render == "browser":
                print_fn("  rendering:          in each page (WebGPU/WebGL2; pages without them get server frames; "
                         "--render server to force those)")
            else:
                print_fn(f"  rendering:          on this machine ({why_server or '--render server'})")
            if engine.frame_fps < engine.fps:
                print_fn(f"  server frames:      at most {engine.frame_fps:g} per second on the "
                         f"{device_type.upper()} (--server-fps to change)")
            print_fn(f"  studio:             {config.url('/', port)}")
            if config.host in WILDCARD_HOSTS:
                print_fn(f"  on this machine:    {config.local_url('/', port)}")
            print_fn(f"  OBS Browser Source: {config.url('/obs', port)}  (512×512, transparent)")
            print_fn("  Ctrl+C to stop")
            if config.open_browser:
                webbrowser.open(config.local_url("/", port))

        threading.Thread(target=announce, name="kyara-live-announce", daemon=True).start()
        server.run(sockets=[sock])
    finally:
        sock.close()
        if engine is not None:
            engine.stop()
        for source in sources:
            source.stop()
