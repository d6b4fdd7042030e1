"""An emulated board: one QEMU process running a firmware, its UART on a pseudo-terminal.

Why these choices (QEMU 7.2's mps2/mps3 machines):

* the UART goes to ``-chardev pty``, never to stdio: stdio multiplexing eats 0x01 bytes, and a
  pty is what a real board's USB serial port looks like to pyserial;
* ``-icount shift=N`` makes virtual time advance 2**N ns per instruction, so the firmware's timer
  counts instructions exactly and every run gives the same numbers;
* QEMU must never outlive whoever started it: it is killed when its parent dies (Linux
  ``PR_SET_PDEATHSIG``), on :meth:`close`, and at interpreter exit;
* while it runs, a note in the runtime folder (board, machine, pty, pid) lets ``microtvm
  devices`` list it beside real boards (:func:`running_boards`); the note goes with it, and a
  note whose QEMU is gone (killed with its server) is ignored and removed by the next reader.
"""
from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Deque, Dict, List, Optional, Sequence, Set

from ..errors import MicrotvmError

QEMU = "qemu-system-arm"  # the Cortex-M family's emulator (targets.json), and the default
_PTY_RE = re.compile(r"char device redirected to (\S+) \(label (\w+)\)")
_LIVE: Set["QemuBoard"] = set()


class QemuError(MicrotvmError):
    """QEMU is missing, did not start, or stopped."""


def find_qemu(program: str = QEMU) -> str:
    """The emulator's path, or one line naming the packages that provide it (targets.json)."""
    path = shutil.which(program)
    if path is None:
        from ..targets import families

        packages = [p for f in families().values() if f.emulator and program in f.emulator.tools for p in f.emulator.packages]
        hint = f"apt-get install {' '.join(packages or [program])} (Debian/Ubuntu)"
        raise QemuError(f"{program} is not on PATH, and emulated boards need it; install it with: {hint}")
    return path


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def qemu_command(machine: str, image: Path, icount_shift: Optional[int], qemu: str = QEMU) -> List[str]:
    cmd = [qemu, "-M", machine, "-nodefaults", "-display", "none", "-nic", "none", "-chardev", "pty,id=uart0",
           "-serial", "chardev:uart0", "-kernel", str(image)]
    if icount_shift is not None:
        cmd += ["-icount", f"shift={icount_shift}"]
    return cmd


class QemuBoard:
    """``with QemuBoard(machine, elf) as board:`` then open ``board.pty`` (see the module docstring)."""

    def __init__(
        self,
        machine: str,
        image: Path,
        icount_shift: Optional[int] = 0,
        *,
        start_timeout_sec: float = 20.0,
        board: Optional[str] = None,
        qemu: Optional[str] = None,
    ) -> None:
        self.program = qemu or QEMU
        self.machine = machine
        self.board = board or machine
        self.image = Path(image)
        self.icount_shift = icount_shift
        self.start_timeout_sec = start_timeout_sec
        self.pty: Optional[str] = None
        self._proc: Optional[subprocess.Popen] = None
        self._stderr: Deque[str] = deque(maxlen=20)
        self._found = threading.Event()
        self._note: Optional[Path] = None  # the running-board note, while QEMU runs

    # ---------------------------------------------------------------- lifetime

    def start(self) -> str:
        """Starts QEMU and returns the pty its UART is on (raises QemuError on failure)."""
        if not self.image.is_file():
            raise QemuError(f"firmware image {self.image} does not exist; build and flash the project first")
        cmd = qemu_command(self.machine, self.image, self.icount_shift, find_qemu(self.program))
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,  # where QEMU 7.2 announces the pty
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            close_fds=True,
        )
        _LIVE.add(self)
        threading.Thread(target=self._drain, args=(self._proc,), daemon=True).start()
        deadline = time.monotonic() + self.start_timeout_sec
        while not self._found.wait(0.02):
            if self._proc.poll() is not None:
                self._proc.wait()
                raise QemuError(f"{self.machine}: QEMU exited with status {self._proc.returncode} at start: {self.last_words()}")
            if time.monotonic() > deadline:
                self.close()
                raise QemuError(f"{self.machine}: QEMU did not open its serial port within {self.start_timeout_sec:.0f} s")
        if self.pty is None:  # pragma: no cover - _found is set only with the pty
            raise QemuError(f"{self.machine}: QEMU started without a serial port")
        self._note = _write_note(self)
        return self.pty

    def _drain(self, proc: subprocess.Popen) -> None:
        """Reads QEMU's output to its end: finds the pty, keeps the last lines for errors, and
        never lets a full pipe stop QEMU."""
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            match = _PTY_RE.search(line)
            if match and not self._found.is_set():
                self.pty = match.group(1)
                self._found.set()
            elif line:
                self._stderr.append(line)
        proc.stdout.close()

    def exit_reason(self) -> Optional[str]:
        """None while QEMU runs; else what ended it, in words."""
        proc = self._proc
        if proc is None or proc.poll() is None:
            return None
        code = proc.returncode
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        words = self.last_words()
        return f"QEMU ({self.machine}) {how}" + (f": {words}" if words else "")

    def last_words(self) -> str:
        return self._stderr[-1] if self._stderr else ""

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc is not None else None

    def close(self) -> None:
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        note, self._note = self._note, None
        if note is not None:
            _remove(note)
        if proc is None:
            return
        if proc.poll() is None:
            # SIGKILL, not SIGTERM: QEMU holds nothing a clean exit would save (no disk images;
            # the firmware is read-only), and a QEMU blocked writing to a pty that nobody reads
            # any more only handles signals once its pty notices the reader left (1-2 s later),
            # so a Ctrl-C mid-session waited that long for it.
            proc.kill()
        proc.wait()
        self._proc = proc  # keep the exit status for exit_reason()

    def __enter__(self) -> "QemuBoard":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------ running boards, for `devices`

@dataclass(frozen=True)
class RunningBoard:
    """An emulated board whose QEMU runs now: its UART is on ``pty``."""

    board: str
    machine: str
    pty: str
    pid: int
    image: str


def _notes_dir() -> Path:
    from ..dirs import runtime_dir

    return runtime_dir() / "qemu"


def _write_note(board: "QemuBoard") -> Optional[Path]:
    """Best effort: a board that cannot leave a note still runs (devices just will not list it)."""
    try:
        folder = _notes_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{board.pid}.json"
        tmp = folder / f".{board.pid}.json.tmp"
        note = {"board": board.board, "machine": board.machine, "pty": board.pty, "pid": board.pid, "image": str(board.image)}
        tmp.write_text(json.dumps(note) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path
    except OSError:
        return None


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _is_running_qemu(pid: int) -> bool:
    from ..procs import is_running, proc_stat

    stat = proc_stat(pid)
    return is_running(pid) and (stat is None or stat.comm.startswith("qemu-system"))


#: Linux's largest possible pid (PID_MAX_LIMIT): a note naming another is not one we wrote.
_PID_LIMIT = 1 << 22
_NOTE_MAX_BYTES = 64 * 1024


def _read_note(path: Path) -> RunningBoard:
    """The board a note describes; ValueError saying what is wrong with a note we did not write
    (hand-edited, truncated by a full disk, or planted)."""
    with open(path, "rb") as fh:
        raw = fh.read(_NOTE_MAX_BYTES + 1)
    if len(raw) > _NOTE_MAX_BYTES:
        raise ValueError(f"it is over {_NOTE_MAX_BYTES} bytes")
    try:
        note = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise ValueError("it is nested too deeply") from None
    if not isinstance(note, dict):
        raise ValueError("it is not a JSON object")
    texts: Dict[str, str] = {}
    for key in ("board", "machine", "pty", "image"):
        value = note.get(key)
        if not isinstance(value, str):
            raise ValueError(f"its {key} is not a string")
        texts[key] = value
    pid = note.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid < _PID_LIMIT:
        raise ValueError(f"its pid {pid!r} is not a process id")
    return RunningBoard(texts["board"], texts["machine"], texts["pty"], pid, texts["image"])


def running_boards() -> List[RunningBoard]:
    """Every emulated board whose QEMU runs now (on this machine, for this user's runtime folder).

    A note whose QEMU is gone is removed; so is a malformed one (we never write one: it cannot
    describe a board), with a warning naming it, and the rest are still listed."""
    import logging

    try:
        paths = sorted(_notes_dir().glob("*.json"))
    except OSError:
        return []
    found = []
    for path in paths:
        try:
            board = _read_note(path)
        except OSError:
            continue  # gone meanwhile, or not a file: nothing to describe
        except ValueError as err:
            logging.getLogger(__name__).warning(
                "microtvm: removed the emulated-board note %s: %s (notes are microtvm's own; nothing is lost)", path, err)
            _remove(path)
            continue
        if _is_running_qemu(board.pid) and os.path.exists(board.pty):
            found.append(board)
        else:
            _remove(path)  # its QEMU went without closing (killed with its server)
    return found


@atexit.register
def _close_all() -> None:
    for board in list(_LIVE):
        board.close()


def _terminate_on(signum: int) -> None:
    """SIGTERM (what a Project API client sends a server it stops) ends QEMU first."""
    previous = signal.getsignal(signum)

    def handler(sig, frame):  # pragma: no cover - exercised through the server tests
        _close_all()
        if callable(previous):
            previous(sig, frame)
        else:
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)

    try:
        signal.signal(signum, handler)
    except ValueError:  # not the main thread
        pass


def install_signal_cleanup(signals: Sequence[int] = (signal.SIGTERM, signal.SIGHUP)) -> None:
    for signum in signals:
        _terminate_on(signum)
