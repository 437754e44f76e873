"""Decode bombs against a live server: RSS of `credence serve` while hostile uploads run at once.

A resolution bomb is a tiny, valid H.264 stream whose sequence parameter set (SPS) declares a
huge frame: 16384×8704 here, 214 MB per decoded yuv420p frame, from a file of a few KB (the
review's was 420 KB and took the server from 1.9 to 4.36 GB). It is made without encoding a huge
frame: libx264 encodes a 64×64 clip, and the SPS is rewritten bit by bit to declare the big size
(the slices then cover a corner of the frame; the decoder conceals the rest, but allocates every
frame whole, which is the point). Two kinds:

- `declared`: every SPS declares the huge size (the MP4's `avcC` too): the probe sees it;
- `switch`: the first SPS is honest (64×64) and later ones switch to the huge size mid-stream:
  only the decoder sees it.

`python -m bench.bombs` starts `credence serve`, measures its resting RSS (the process tree,
from /proc), sends `--uploads` bombs to `POST /v1/verify` at once (half of each kind), samples
RSS every 20 ms until all are answered, and writes bench/results/bombs.json. For scale it also
decodes one bomb with plain PyAV (no limits) in a child process and reports that child's peak.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
BOMB_SIZE = (16384, 8704)


# -- making the bomb ---------------------------------------------------------------------------------
class _Bits:
    """Read and write the bits of an RBSP (with Exp-Golomb codes), most significant bit first."""

    def __init__(self, data: bytes = b"") -> None:
        self.data, self.pos, self.out = data, 0, []

    def read(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = (value << 1) | ((self.data[self.pos >> 3] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value

    def read_ue(self) -> int:
        zeros = 0
        while self.read(1) == 0:
            zeros += 1
        return (1 << zeros) - 1 + self.read(zeros)

    def write(self, n: int, value: int) -> None:
        self.out += [(value >> i) & 1 for i in range(n - 1, -1, -1)]

    def write_ue(self, value: int) -> None:
        value += 1
        self.write(value.bit_length() - 1, 0)
        self.write(value.bit_length(), value)

    def copy(self, n: int) -> int:
        value = self.read(n)
        self.write(n, value)
        return value

    def copy_ue(self) -> int:
        value = self.read_ue()
        self.write_ue(value)
        return value

    def written(self) -> bytes:
        bits = self.out + [0] * (-len(self.out) % 8)
        return bytes(int("".join(map(str, bits[i:i + 8])), 2) for i in range(0, len(bits), 8))


def _unescape(data: bytes) -> bytes:
    out, zeros = bytearray(), 0
    for byte in data:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _escape(data: bytes) -> bytes:
    out, zeros = bytearray(), 0
    for byte in data:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _resize_sps(nal: bytes, width: int, height: int) -> bytes:
    """A baseline-profile SPS NAL unit rewritten to declare `width`×`height` (multiples of 16), level 6.2."""
    bits = _Bits(_unescape(nal[1:]))
    profile = bits.copy(8)
    if profile != 66:
        raise ValueError(f"expected a baseline SPS (profile 66), got profile {profile}")
    bits.copy(8)  # constraint flags
    bits.read(8)
    bits.write(8, 62)  # level 6.2: the largest; decoders do not enforce levels anyway
    bits.copy_ue()  # seq_parameter_set_id
    bits.copy_ue()  # log2_max_frame_num_minus4
    if bits.copy_ue() == 0:  # pic_order_cnt_type
        bits.copy_ue()
    bits.copy_ue()  # max_num_ref_frames
    bits.copy(1)  # gaps_in_frame_num_value_allowed_flag
    bits.read_ue()
    bits.read_ue()
    bits.write_ue(width // 16 - 1)
    bits.write_ue(height // 16 - 1)
    while bits.pos < len(bits.data) * 8:  # the rest as it was (flags, VUI, stop bit)
        bits.copy(1)
    return nal[:1] + _escape(bits.written().rstrip(b"\x00"))


def make_resolution_bomb(path: Path, *, size: tuple[int, int] = BOMB_SIZE, frames: int = 60, fps: int = 25,
                         kind: str = "declared") -> Path:
    """Write a small MP4 whose H.264 stream decodes to `size` frames (see the module); returns `path`."""
    if kind not in ("declared", "switch"):
        raise ValueError(f"kind must be declared or switch, got {kind!r}")
    small = 64
    raw = io.BytesIO()
    with av.open(raw, "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = small
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "profile": "baseline", "crf": "30",
                          "x264-params": "keyint=10:scenecut=0:threads=1:log-level=error:repeat-headers=1"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((small, small, 3), (i * 7) % 256, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    nals = [n for n in re.split(b"\x00\x00\x00\x01|\x00\x00\x01", raw.getvalue()) if n]
    patched, seen = bytearray(), 0
    for nal in nals:
        if nal[0] & 0x1F == 7:  # SPS
            seen += 1
            if kind == "declared" or seen > 1:
                nal = _resize_sps(nal, *size)
        patched += b"\x00\x00\x00\x01" + nal
    annexb = path.with_suffix(".h264")
    annexb.write_bytes(bytes(patched))
    try:
        with av.open(str(annexb), format="h264") as source, av.open(str(path), "w", format="mp4") as target:
            src = source.streams.video[0]
            dst = target.add_stream_from_template(src)
            index = 0
            for packet in source.demux(src):
                if packet.size == 0:
                    continue
                packet.stream = dst
                packet.time_base = Fraction(1, fps)
                packet.pts = packet.dts = index
                packet.duration = 1
                target.mux(packet)
                index += 1
    finally:
        annexb.unlink(missing_ok=True)
    return path


def make_small_clip(path: Path, *, frames: int = 25, size: tuple[int, int] = (160, 96)) -> Path:
    """An ordinary little clip (random noise), to warm the server up before measuring its resting RSS."""
    from provenance.video import write_video

    rng = np.random.default_rng(0)
    write_video(path, (rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) for _ in range(frames)), 25.0)
    return path


# -- measuring a server ------------------------------------------------------------------------------
def tree_rss(pid: int) -> int:
    """Resident bytes of process `pid` and all its descendants (psutil when installed, else /proc)."""
    try:
        import psutil
    except ImportError:
        psutil = None  # type: ignore[assignment]
    if psutil is not None:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        total = 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class RssSampler:
    """Samples `tree_rss(pid)` every `interval` seconds on a thread; `peak` is the highest seen."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid, self.interval, self.peak = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss(self.pid))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(home: Path, key: str, **env_overrides: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`credence init` in `home`, then `credence serve` on a free port with bootstrap key `key`: (url, process)."""
    env = {**os.environ, "CREDENCE_HOME": str(home), "CREDENCE_API_KEYS": key, "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", **env_overrides}
    env.pop("CREDENCE_DATABASE_URL", None)
    env.pop("CREDENCE_BROKER_URL", None)
    subprocess.run([sys.executable, "-m", "credence", "init"], env=env, check=True, capture_output=True)
    port = free_port()
    log = open(home / "serve.log", "wb")  # closed below
    proc = subprocess.Popen([sys.executable, "-m", "credence", "serve", "--port", str(port)], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"credence serve did not start: {(home / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.3)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def upload(url: str, key: str, path: Path) -> dict[str, Any]:
    """POST `path` to /v1/verify; what came back (status, content type, problem fields)."""
    started = time.monotonic()
    with path.open("rb") as handle:
        answer = httpx.post(f"{url}/v1/verify", headers={"X-API-Key": key}, timeout=300,
                            files={"file": (path.name, handle, "video/mp4")})
    body: dict[str, Any] = {}
    if answer.headers.get("content-type", "").startswith(("application/json", "application/problem+json")):
        body = answer.json()
    return {"file": path.name, "status": answer.status_code, "content_type": answer.headers.get("content-type"),
            "seconds": round(time.monotonic() - started, 2), "type": body.get("type"), "detail": body.get("detail"),
            "verdict": body.get("verdict")}


def bomb_round(url: str, key: str, pid: int, bombs: list[Path], settle_s: float = 2.0) -> dict[str, Any]:
    """Resting RSS, then every bomb uploaded at once; peak RSS while they run, growth, and the answers."""
    time.sleep(settle_s)
    resting = tree_rss(pid)
    answers: list[dict[str, Any]] = [{} for _ in bombs]

    def send(i: int) -> None:
        answers[i] = upload(url, key, bombs[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bombs))]
    with RssSampler(pid) as sampler:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return {"uploads": len(bombs), "resting_rss_mb": round(resting / 2**20, 1),
            "peak_rss_mb": round(sampler.peak / 2**20, 1), "growth_mb": round((sampler.peak - resting) / 2**20, 1),
            "answers": answers}


def unbounded_decode_peak(path: Path, frames: int = 10) -> float:
    """Peak RSS (MB, its VmHWM) of a child process that decodes `frames` frames of `path` with plain PyAV, no limits."""
    code = ("import av, sys\n"
            "c = av.open(sys.argv[1]); s = c.streams.video[0]; s.thread_type = 'AUTO'\n"
            "for i, f in enumerate(c.decode(s)):\n"
            "    if i + 1 >= int(sys.argv[2]): break\n"
            "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM:')).split()[1])\n")
    out = subprocess.run([sys.executable, "-c", code, str(path), str(frames)], capture_output=True, text=True,
                         check=True, timeout=600)
    return round(int(out.stdout.split()[-1]) / 1024, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=4, help="bombs sent at once (half declared, half switch)")
    parser.add_argument("--frames", type=int, default=60, help="frames per bomb")
    parser.add_argument("--out", type=Path, default=RESULTS / "bombs.json")
    args = parser.parse_args()
    key = "bench-bombs-key-0123456789"
    with tempfile.TemporaryDirectory(prefix="credence-bench-bombs-") as tmp:
        folder = Path(tmp)
        kinds = ["declared" if i % 2 == 0 else "switch" for i in range(args.uploads)]
        bombs = [make_resolution_bomb(folder / f"bomb-{i}-{kind}.mp4", frames=args.frames, kind=kind)
                 for i, kind in enumerate(kinds)]
        bomb_bytes = bombs[0].stat().st_size
        started = time.monotonic()
        reference = unbounded_decode_peak(bombs[0])
        print(f"plain decode of one bomb: {reference} MB peak ({time.monotonic() - started:.0f} s)", flush=True)
        home = folder / "home"
        with serving(home, key) as (url, proc):
            warm = upload(url, key, make_small_clip(folder / "warm.mp4"))  # loads the detector's models
            result = bomb_round(url, key, proc.pid, bombs)
    result.update({"machine": f"{os.cpu_count()} cores", "bomb_bytes": bomb_bytes,
                   "bomb_frame": f"{BOMB_SIZE[0]}x{BOMB_SIZE[1]}", "bomb_frames": args.frames,
                   "warm_up_answer": warm["status"], "unbounded_decode_one_bomb_peak_rss_mb": reference,
                   "target_growth_mb": 300})
    print(f"{'uploads':>8}{'resting MB':>12}{'peak MB':>10}{'growth MB':>11}  answers")
    statuses = ", ".join(f"{a['file'].split('-')[2].removesuffix('.mp4')} {a['status']}" for a in result["answers"])
    print(f"{result['uploads']:>8}{result['resting_rss_mb']:>12}{result['peak_rss_mb']:>10}{result['growth_mb']:>11}"
          f"  {statuses}")
    print(f"one bomb ({result['bomb_bytes']} bytes, {result['bomb_frame']}) decoded with plain PyAV, no limits: "
          f"peak {reference} MB in its own process")
    for answer in result["answers"]:
        print(f"  {answer['file']}: {answer['status']} {answer['type']} - {answer['detail']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
