"""A run's supervision: a launched process dies with the process that started it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

# A supervisor that starts a long "training" child with the hook, reports its pid, and is killed.
SUPERVISOR = """
import os, signal, subprocess, sys
from training.engine.progress import die_with_parent_hook
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], stdout=subprocess.DEVNULL,
                         preexec_fn=die_with_parent_hook())
print(child.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has died; only its exit status waits to be read


def test_a_launched_process_dies_with_a_killed_supervisor():
    done = subprocess.run([sys.executable, "-c", SUPERVISOR], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == -9
    child = int(done.stdout.split()[0])
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_the_metrics_tail_reads_only_new_lines_and_starts_over_on_a_replaced_file(tmp_path):
    import json
    import os

    from training.engine.progress import METRICS_FILE, MetricsTail

    path = tmp_path / METRICS_FILE
    tail = MetricsTail(tmp_path)
    assert tail.read(after_step=0) == []  # no file yet
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2)) + '{"step": 3')  # 3 is half written
    assert [r["step"] for r in tail.read(after_step=0)] == [1, 2]
    with path.open("a") as f:
        f.write("}\n")
    assert [r["step"] for r in tail.read(after_step=2)] == [3]
    assert tail.read(after_step=3) == []
    # A resumed run replaces the file with the lines up to its checkpoint, then goes on.
    replacement = tmp_path / "new"
    replacement.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3, 4)))
    os.replace(replacement, path)
    assert [r["step"] for r in tail.read(after_step=3)] == [4]
