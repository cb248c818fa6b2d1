"""Fuzz: 10,000 random/malformed messages per protocol through the parsers and through live sockets.

Parsers may only return a valid frame or raise ProtocolError. Receivers must keep running, count
every malformed datagram as dropped, and still process a valid packet afterwards.
"""
import math
import random
import struct
import time

import pytest
from pythonosc.osc_message_builder import OscMessageBuilder

from kyara.drive.arkit import ARKIT_BLENDSHAPES, ARKIT_SET, arkit_to_pose_values
from kyara.drive.ifacialmocap import IFacialMocapReceiver, parse_ifacialmocap_v2
from kyara.drive.source import ProtocolError
from kyara.drive.vmc import MAX_BLEND_NAMES, VmcReceiver, VmcState
from kyara.pose import INDEX, PARAMETERS
from senders import UdpSender, arkit_wire_name, ifacialmocap_packet, unity_quaternion, vmc_frame

N = 10_000
BAD_NUMBERS = ["nan", "NaN", "inf", "-inf", "1e999", "-1e400", "9" * 400, "", "abc", "0x1f", "1_0", "\u0665",
               "1e308", "-0", "+5", ".5", "5.", "1e-400", "--3", "3-", " 7 ", "1,2"]
VRM_NAMES = ["A", "I", "U", "E", "O", "Blink", "Blink_L", "Blink_R", "Joy", "Angry", "Sorrow", "Fun", "aa", "blink",
             "LookLeft", "happy", "surprised"]


def _valid_ifm(rng):
    shapes = {n: rng.random() for n in rng.sample(ARKIT_BLENDSHAPES, rng.randint(1, 52))}
    head = tuple(rng.uniform(-60, 60) for _ in range(3))
    return ifacialmocap_packet(shapes, head_deg=head, version=rng.choice((1, 2)))


def _mutate(rng, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.random()
        i = rng.randrange(len(b) + 1)
        if op < 0.4 and b:
            b[min(i, len(b) - 1)] = rng.randrange(256)
        elif op < 0.7:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        elif b:
            del b[i:i + rng.randint(1, 4)]
    return bytes(b)


def ifacialmocap_corpus(seed=0, n=N):
    rng = random.Random(seed)
    pool = [_valid_ifm(rng) for _ in range(300)]  # building packets is slower than parsing them
    out = []
    while len(out) < n:
        k = rng.random()
        if k < 0.15:
            out.append(bytes(rng.randrange(256) for _ in range(rng.choice((0, 1, 7, 64, 300, 2000)))))
        elif k < 0.30:
            v = rng.choice(pool)
            out.append(v[: rng.randrange(len(v))])
        elif k < 0.50:
            out.append(_mutate(rng, rng.choice(pool)))
        elif k < 0.70:  # a bad number somewhere
            name = arkit_wire_name(rng.choice(ARKIT_BLENDSHAPES))
            bad = rng.choice(BAD_NUMBERS)
            field = rng.choice([f"{name}&{bad}", f"{name}-{bad}", f"=head#{bad},1,2,3,4,5", f"leftEye#1,{bad},3"])
            out.append(rng.choice(pool) + field.encode("utf-8", "surrogatepass") + b"|")
        elif k < 0.80:  # unknown names, odd keys, wrong counts
            field = rng.choice(["fooBar&12", "FM_SAD&3", "=head#1,2", "=head#1,2,3,4,5,6,7", "rightEye#", "x#1,2,3",
                                "&&&", "a&b&c", "===", "é&3", "eyeBlink_L&50|" * 600, "#", "head#1,2,3"])
            out.append(field.encode())
        elif k < 0.85:
            out.append(rng.choice([b"\x00" * 100, b"|" * 5000, "|".join(["jawOpen&5"] * 2000).encode(),
                                   b"jawOpen&" + b"9" * 60000, "ジョー&5".encode()]))
        else:
            out.append(rng.choice(pool))
    return out


def _osc(address, *args):
    m = OscMessageBuilder(address=address)
    for a in args:
        if isinstance(a, tuple):
            m.add_arg(*a)
        else:
            m.add_arg(a)
    return m.build().dgram


def _valid_vmc(rng):
    names = rng.sample(VRM_NAMES, rng.randint(0, 5)) + rng.sample(ARKIT_BLENDSHAPES, rng.randint(0, 10))
    blends = {n: rng.random() for n in names}
    head = unity_quaternion(*(rng.uniform(-40, 40) for _ in range(3))) if rng.random() < 0.8 else None
    neck = unity_quaternion(*(rng.uniform(-20, 20) for _ in range(3))) if rng.random() < 0.5 else None
    return vmc_frame(blends, head_quat=head, neck_quat=neck, apply=rng.random() < 0.9)


def _bad_vmc_message(rng):
    val = "/VMC/Ext/Blend/Val"
    bone = "/VMC/Ext/Bone/Pos"
    name = rng.choice(VRM_NAMES + list(ARKIT_BLENDSHAPES))
    choice = rng.randrange(14)
    if choice == 0:
        return _osc(val, name, (float(rng.choice([math.nan, math.inf, -math.inf, 1e30, -3e38])), "f"))
    if choice == 1:
        return _osc(val, (rng.randint(-5, 5), "i"), (0.5, "f"))
    if choice == 2:
        return _osc(val, name, "0.5")
    if choice == 3:
        return _osc(val, name, (b"\x01\x02", "b"))
    if choice == 4:
        return _osc(val, name, (0.5, "d"))                      # double: unsupported type
    if choice == 5:
        return _osc(val, name, (5, "h"))                        # int64: unsupported type
    if choice == 6:
        return _osc(val, name, (None, "N"))
    if choice == 7:
        return _osc(val, name, ((1, 2, 3, 4), "m"))
    if choice == 8:
        return _osc(val, name)                                  # missing value
    if choice == 9:
        return _osc(bone, "Head", *[(0.0, "f")] * 7)           # all-zero quaternion
    if choice == 10:
        return _osc(bone, "Head", *[(rng.choice([math.nan, 1e30, 0.0]), "f") for _ in range(7)])
    if choice == 11:
        return _osc(bone, "Head", 1.0, 2.0)
    if choice == 12:
        return _osc(bone, ("Head", "s"), *[("x", "s")] * 7)
    return _osc(val, name, (True, "T"))


def _bundle(_rng, parts):
    """OSC bundle framing (spec: '#bundle', time tag, then size-prefixed elements) around python-osc messages."""
    return b"#bundle\x00" + b"\x00" * 7 + b"\x01" + b"".join(struct.pack(">i", len(p)) + p for p in parts)


def _nest(pkt, depth):
    for _ in range(depth):
        pkt = b"#bundle\x00" + b"\x00" * 7 + b"\x01" + struct.pack(">i", len(pkt)) + pkt
    return pkt


# 4000 tiny messages in one bundle (built by hand: python-osc's builder is slow for this).
MANY_MESSAGES = b"#bundle\x00" + b"\x00" * 7 + b"\x01" + (struct.pack(">i", 8) + b"/m\x00\x00,\x00\x00\x00") * 4000


def vmc_corpus(seed=0, n=N):
    rng = random.Random(seed)
    pool = [_valid_vmc(rng) for _ in range(300)]  # python-osc building is slower than parsing
    bad_pool = [_bad_vmc_message(rng) for _ in range(300)]
    out = []
    while len(out) < n:
        k = rng.random()
        if k < 0.12:
            out.append(bytes(rng.randrange(256) for _ in range(rng.choice((0, 1, 4, 8, 64, 300)))))
        elif k < 0.20:
            prefix = rng.choice([b"#bundle\x00", b"/VMC/Ext/Blend/Val\x00\x00", b"/VMC/Ext/Bone/Pos\x00\x00\x00,sfffffff\x00\x00\x00"])
            out.append(prefix + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64))))
        elif k < 0.35:
            v = rng.choice(pool)
            out.append(v[: rng.randrange(len(v))])
        elif k < 0.55:
            out.append(_mutate(rng, rng.choice(pool)))
        elif k < 0.75:  # wrong types / NaN / huge, alone or inside an otherwise valid bundle
            bad = rng.choice(bad_pool)
            out.append(bad if rng.random() < 0.5 else _bundle(rng, [_val_msg("A", 0.5), bad, _osc("/VMC/Ext/Blend/Apply")]))
        elif k < 0.82:  # unknown names and addresses (valid OSC: accepted and ignored)
            out.append(_bundle(rng, [_val_msg(f"Custom{rng.randrange(10**6)}", rng.random()),
                                     _osc(f"/unknown/{rng.randrange(100)}", 1, 2.5, "x"),
                                     _osc("/VMC/Ext/Blend/Apply")]))
        elif k < 0.85:
            out.append(rng.choice([_nest(_osc("/x"), rng.randint(9, 40)), _nest(_osc("/x"), rng.randint(1, 8)),
                                   MANY_MESSAGES, b"#bundle\x00" + b"\x00" * 8 + b"\x7f\xff\xff\xfc"]))
        else:
            out.append(rng.choice(pool))
    return out


def _val_msg(name, v):
    return _osc("/VMC/Ext/Blend/Val", name, (float(v), "f"))


def _check_values(values):
    for name, x in values.items():
        p = PARAMETERS[INDEX[name]]
        assert math.isfinite(x) and p.low <= x <= p.high, (name, x)


def _check_frame(frame, map_it=True):
    assert set(frame.blendshapes) <= ARKIT_SET
    assert all(0.0 <= v <= 1.0 for v in frame.blendshapes.values())
    for a in (frame.head_pitch_deg, frame.head_yaw_deg, frame.head_roll_deg):
        assert math.isfinite(a) and abs(a) <= 1e6
    if map_it:
        _check_values(arkit_to_pose_values(frame))


@pytest.fixture(scope="module")
def ifm_fuzz():
    """(corpus, number rejected by the parser, seconds spent parsing) — parsed once per module."""
    corpus = ifacialmocap_corpus(1)
    bad = 0
    t0 = time.perf_counter()
    for i, data in enumerate(corpus):
        try:
            frame = parse_ifacialmocap_v2(data)
        except ProtocolError:
            bad += 1
            continue
        _check_frame(frame, map_it=i % 4 == 0)  # mapping is checked on a quarter to keep the test fast
    return corpus, bad, time.perf_counter() - t0


@pytest.fixture(scope="module")
def vmc_fuzz():
    return vmc_corpus(1)


def test_fuzz_ifacialmocap_parser(ifm_fuzz):
    corpus, bad, dt = ifm_fuzz
    ok = len(corpus) - bad
    print(f"\niFacialMocap parser fuzz: {len(corpus)} packets, {ok} accepted, {bad} rejected, {dt:.2f} s")
    assert len(corpus) == N and ok > 1000 and bad > 5000


def test_fuzz_vmc_parser(vmc_fuzz):
    st = VmcState()
    ok = bad = frames = 0
    t0 = time.perf_counter()
    for data in vmc_fuzz:
        try:
            frame = st.feed(data, now=1.0)
        except ProtocolError:
            bad += 1
            continue
        ok += 1
        if frame is not None:
            frames += 1
            _check_frame(frame, map_it=frames % 4 == 0)
            _check_values(dict(frame.direct))
    dt = time.perf_counter() - t0
    print(f"\nVMC parser fuzz: {len(vmc_fuzz)} packets, {ok} accepted ({frames} frames), {bad} rejected, {dt:.2f} s")
    assert ok + bad == N and frames > 1000 and bad > 4000
    assert len(st._blend) <= MAX_BLEND_NAMES  # hostile unknown names cannot grow memory without bound


def _blast(rx, corpus, valid_packet, check):
    """Send corpus to rx in paced chunks; every datagram must be counted as ok or dropped."""
    tx = UdpSender(rx.port)
    t0 = time.perf_counter()
    try:
        sent = 0
        for i in range(0, len(corpus), 200):
            for data in corpus[i:i + 200]:
                tx.send(data)
                sent += 1
            end = time.monotonic() + 5.0
            while time.monotonic() < end:
                s = rx.stats()
                if s["packets_ok"] + s["packets_dropped"] >= sent:
                    break
                time.sleep(0.001)
        s = rx.stats()
        assert rx.running, "receiver thread died"
        assert s["packets_ok"] + s["packets_dropped"] == sent == len(corpus), s
        dt = time.perf_counter() - t0
        # Still alive and processing: a valid packet afterwards is accepted and mapped.
        before = s["packets_ok"]
        tx.send(valid_packet)
        end = time.monotonic() + 2.0
        while rx.stats()["packets_ok"] == before and time.monotonic() < end:
            time.sleep(0.001)
        assert rx.stats()["packets_ok"] == before + 1
        sample = rx.latest(time.monotonic())
        assert sample is not None
        check(sample.as_dict())
        _check_values(sample.as_dict())
        return s, dt
    finally:
        tx.close()


def test_fuzz_ifacialmocap_live_socket(ifm_fuzz):
    rx = IFacialMocapReceiver(port=0)
    rx.start()
    try:
        corpus, expected_bad, _ = ifm_fuzz
        s, dt = _blast(rx, corpus, ifacialmocap_packet({"eyeBlinkLeft": 1.0}, head_deg=(0.0, 10.0, 0.0)),
                       lambda v: v["eye_wink_left"] == 1.0 and v["head_y"] == -1.0)
        print(f"\niFacialMocap live fuzz: {len(corpus)} datagrams in {dt:.2f} s, ok={s['packets_ok']} "
              f"dropped={s['packets_dropped']}")
        assert s["packets_dropped"] == expected_bad
    finally:
        t0 = time.monotonic()
        rx.stop()
        assert time.monotonic() - t0 < 0.5


def test_fuzz_vmc_live_socket(vmc_fuzz):
    rx = VmcReceiver(port=0)
    rx.start()
    try:
        corpus = vmc_fuzz
        s, dt = _blast(rx, corpus, vmc_frame({"A": 0.0, "O": 1.0, "Blink": 0.0, "Joy": 0.0},
                                             head_quat=unity_quaternion(y_deg=-10.0),
                                             neck_quat=unity_quaternion()),
                       lambda v: None)
        v = rx.latest(time.monotonic()).as_dict()
        assert v["mouth_ooo"] == 1.0 and v["head_y"] == pytest.approx(-1.0, abs=1e-6)
        print(f"\nVMC live fuzz: {len(corpus)} datagrams in {dt:.2f} s, ok={s['packets_ok']} "
              f"dropped={s['packets_dropped']}")
        assert s["packets_dropped"] > 4000
    finally:
        rx.stop()
