"""The worker's watch over a run it trains: progress into the run record, cancels out to the run.

A thread beside the training (in this process or in an ``accelerate launch`` subprocess) reads
the run's files (``training.engine.progress``) every ``TRAINING_PROGRESS_INTERVAL`` seconds and
writes what changed to the ``TrainingRun`` row: phase, step, latest metrics, the curve points,
the log tail, and ``progress_at``, which doubles as the worker's heartbeat for this run. It also
reads the row's ``cancel_requested_at`` and, when set, asks the run to stop.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from training.engine import progress as run_progress
from training.models import TrainingRun

logger = logging.getLogger(__name__)

HISTORY_POINTS = 1000
LOG_TAIL_LINES = 40


def history_extend(history: list[dict], records: list[dict], *, limit: int = HISTORY_POINTS) -> list[dict]:
    """``history`` with ``records`` appended, thinned to at most ``limit`` points.

    Thinning drops every other point but the last, so the curve keeps its shape, its first and
    its latest point, and the spacing stays even.
    """
    points = [*history, *records]
    while len(points) > limit:
        points = points[:-1][::2] + points[-1:]
    return points


class RunMonitor:
    """Use as a context manager around the training call; ``poll`` once more on the way out."""

    def __init__(self, run: TrainingRun, *, interval: float | None = None):
        self.run_id = run.pk
        self.output_dir = run.output_dir
        self.interval = interval if interval is not None else settings.TRAINING_PROGRESS_INTERVAL
        history = run.history or []
        self._history = history
        self._last_step = history[-1].get("step", 0) if history else 0
        self._metrics = run_progress.MetricsTail(run.output_dir)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"run-monitor-{run.pk}", daemon=True)
        self.cancel_seen = False

    def __enter__(self) -> RunMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()  # the last report, from the caller's thread

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    self.poll()
                except Exception:  # a monitor hiccup (database restart) must not stop the training
                    logger.exception("run %s: progress update failed; trying again", self.run_id)
                    close_old_connections()
        finally:
            connection.close()

    def poll(self) -> None:
        """Copy the run's files to its row, and pass on a cancel."""
        report = run_progress.read_progress(self.output_dir) or {}
        records = self._metrics.read(after_step=self._last_step)
        if records:
            self._history = history_extend(self._history, records)
            self._last_step = records[-1].get("step", self._last_step)
        fields = {"progress_at": timezone.now(), "log_tail": run_progress.read_log_tail(
            self.output_dir, lines=LOG_TAIL_LINES)}
        if report:
            fields.update(phase=str(report.get("phase", ""))[:40], step=int(report.get("step", 0)),
                          total_steps=int(report.get("total_steps", 0)))
            if report.get("metrics"):
                fields["progress"] = report["metrics"]
        if records:
            fields["history"] = self._history
        TrainingRun.objects.filter(pk=self.run_id).update(**fields)
        if not self.cancel_seen and TrainingRun.objects.filter(
                pk=self.run_id, cancel_requested_at__isnull=False).exists():
            self.cancel_seen = True
            run_progress.request_stop(self.output_dir)
            logger.info("run %s: cancel requested; the run stops at its next step boundary", self.run_id)
