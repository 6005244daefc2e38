"""Optional sampling profiles of the server while a scenario runs (``--profile``; needs py-spy).

py-spy samples every server process (``--subprocesses``) without pausing them
(``--nonblocking``) and writes collapsed stacks; :func:`top_frames` turns those into the
functions that hold the most samples, by self time and inclusive time. A profiled run is for
diagnosis: sampling costs CPU on the same cores, so its numbers do not go in the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_PYSPY_NAMES = ("py-spy",)
#: "function (module/path.py)" or "function (module/path.py:123)".
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def find_py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists():
        return str(beside)
    return shutil.which(_PYSPY_NAMES[0])


def frame_name(frame: str) -> str:
    """``"hash (argon2/_password_hasher.py:190)"`` -> ``"hash (argon2/_password_hasher.py)"``."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    return f"{match['func']} ({match['file']})"


@dataclass
class Frames:
    samples: int
    self_top: list[tuple[str, int]]
    inclusive_top: list[tuple[str, int]]

    def render(self, limit: int = 15) -> str:
        def pct(n: int) -> str:
            return f"{100 * n / self.samples:5.1f}%" if self.samples else "   - "

        lines = [f"{self.samples} samples", "", "self (where the samples were):"]
        lines += [f"  {pct(n)}  {name}" for name, n in self.self_top[:limit]]
        lines += ["", "inclusive (in the stack):"]
        lines += [f"  {pct(n)}  {name}" for name, n in self.inclusive_top[:limit]]
        return "\n".join(lines)


def top_frames(collapsed: str, limit: int = 40) -> Frames:
    """Aggregate py-spy's raw (collapsed) stacks: ``a;b;c 12`` per line, root first."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [frame_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        own[frames[-1]] += n
        for name in set(frames):
            inclusive[name] += n
    return Frames(total, own.most_common(limit), inclusive.most_common(limit))


class Profiler:
    """Runs one py-spy per scenario against the server's process tree."""

    def __init__(self, py_spy: str, out_dir: Path) -> None:
        self.py_spy = py_spy
        self.out_dir = out_dir
        self._proc: asyncio.subprocess.Process | None = None
        self._path: Path | None = None

    async def start(self, pid: int, name: str) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._path = self.out_dir / f"{name}.collapsed.txt"
        self._proc = await asyncio.create_subprocess_exec(
            self.py_spy, "record", "--pid", str(pid), "--subprocesses", "--nonblocking",
            "--format", "raw", "--rate", "100", "--output", str(self._path),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await asyncio.sleep(0.5)  # let it attach

    async def stop(self) -> Frames | None:
        proc, path = self._proc, self._path
        self._proc = self._path = None
        if proc is None or path is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if not path.exists():
            return None
        frames = top_frames(path.read_text(errors="replace"))
        path.with_name(path.name.replace(".collapsed.txt", ".top.txt")).write_text(
            frames.render(40) + "\n"
        )
        return frames
