"""How a training run talks to whoever supervises it: three files in its ``output_dir``.

    progress.json    written by the run (main process), replaced atomically, at most once every
                     ``interval`` seconds and at each phase change and logged step:
                     {"phase", "step", "total_steps", "metrics", "updated"}
    metrics.jsonl    one line per logged step (``loop.MetricsWriter``)
    STOP             created by the supervisor; every process of the run stops at the next step
                     boundary, saves a checkpoint there, and raises ``TrainingCancelled``
    train.log        the run's log (``LOG_FORMAT``); a launched run's stdout and stderr

Files, not callbacks, so that a run in the supervisor's own process and one launched as an
``accelerate launch`` subprocess are watched and stopped the same way. The module imports
neither torch nor Django.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

PROGRESS_FILE = "progress.json"
STOP_FILE = "STOP"
LOG_FILE = "train.log"
LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
METRICS_FILE = "metrics.jsonl"


class ProgressWriter:
    """The run's side: phase and step reports, throttled; does nothing outside the main process."""

    def __init__(self, output_dir: str | Path, *, total_steps: int, enabled: bool, interval: float = 1.0):
        self.path = Path(output_dir) / PROGRESS_FILE
        self.total_steps = total_steps
        self.enabled = enabled
        self.interval = interval
        self.phase = "starting"
        self.step = 0
        self.metrics: dict = {}
        self._written = 0.0

    def set_phase(self, phase: str, step: int | None = None) -> None:
        self.phase = phase
        if step is not None:
            self.step = step
        self._write()

    def report(self, step: int, metrics: dict | None = None) -> None:
        """A step done; ``metrics`` when it was a logged step (then written at once)."""
        self.step = step
        if metrics is not None:
            self.metrics = metrics
            self._write()
        elif time.monotonic() - self._written >= self.interval:
            self._write()

    def _write(self) -> None:
        if not self.enabled:
            return
        record = {"phase": self.phase, "step": self.step, "total_steps": self.total_steps,
                  "metrics": self.metrics, "updated": time.time()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{PROGRESS_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.path)
        self._written = time.monotonic()


def read_progress(output_dir: str | Path) -> dict | None:
    """The run's last report, or None before its first (or if the file is being replaced)."""
    try:
        return json.loads((Path(output_dir) / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None


def request_stop(output_dir: str | Path) -> None:
    """Ask the run in ``output_dir`` to stop at its next step boundary."""
    path = Path(output_dir) / STOP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def stop_requested(output_dir: str | Path) -> bool:
    return (Path(output_dir) / STOP_FILE).exists()


def clear_stop(output_dir: str | Path) -> None:
    """A resumed run starts without the stop request that ended its previous attempt."""
    try:
        (Path(output_dir) / STOP_FILE).unlink()
    except FileNotFoundError:
        pass


def read_metrics(output_dir: str | Path, *, after_step: int = 0) -> list[dict]:
    """Logged steps after ``after_step``, in order (a line being written is left for next time)."""
    try:
        text = (Path(output_dir) / METRICS_FILE).read_text()
    except OSError:
        return []
    return _records_after(text.splitlines(), after_step)


def _records_after(lines, after_step: int) -> list[dict]:
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("step", 0) > after_step:
            records.append(record)
    return records


class MetricsTail:
    """Reads ``metrics.jsonl`` as it grows: each call parses only the lines added since the last.

    A resumed run replaces the file (``loop.MetricsWriter`` keeps the lines up to its checkpoint),
    so a new file, or one shorter than what was read, is read again from its start; ``after_step``
    keeps steps already seen from coming back.
    """

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / METRICS_FILE
        self._inode: int | None = None
        self._offset = 0

    def read(self, *, after_step: int) -> list[dict]:
        try:
            with self.path.open("rb") as handle:
                stat = os.fstat(handle.fileno())
                if stat.st_ino != self._inode or stat.st_size < self._offset:
                    self._inode, self._offset = stat.st_ino, 0
                handle.seek(self._offset)
                data = handle.read()
        except OSError:
            return []
        complete = data[:data.rfind(b"\n") + 1]  # a line being written is left for next time
        self._offset += len(complete)
        return _records_after(complete.decode("utf-8", errors="replace").splitlines(), after_step)


def read_log_tail(output_dir: str | Path, *, lines: int = 40, max_bytes: int = 64_000) -> str:
    """The last ``lines`` lines of the run's log."""
    path = Path(output_dir) / LOG_FILE
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace").replace("\r", "\n")
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def die_with_parent_hook() -> Callable[[], None]:
    """A function that has the kernel SIGTERM the process calling it when that process's parent dies.

    So that no run trains on as an orphan of a killed supervisor. Linux only (prctl
    PR_SET_PDEATHSIG; elsewhere the function does nothing). libc is loaded here, beforehand, so
    that the function is safe to run as a subprocess ``preexec_fn``, between fork and exec.
    """
    if not sys.platform.startswith("linux"):
        return lambda: None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def die_with_parent() -> None:
        parent = os.getppid()
        prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1: PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return die_with_parent
