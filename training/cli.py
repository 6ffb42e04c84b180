"""What the training commands share: run settings from a file and ``--set``, users, progress bars (tqdm; no torch)."""

from __future__ import annotations

import time

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from tqdm import tqdm

from training.engine.config import read_settings
from training.models import TrainingRound, TrainingRun
from training.rounds import ACTIVE_STAGES, training_round_advance, training_round_progress
from training.services import RUN_DECIDED


def run_settings(path: str | None, overrides: list[str], *, stderr) -> dict:
    """A run's settings from a config file and ``key=value`` overrides; the paths a run decides are left out of the file
    (with a note on ``stderr``). Raises ConfigError."""
    config, ignored = read_settings(path, overrides, leave_out=RUN_DECIDED)
    if ignored:
        stderr.write(f"ignoring {', '.join(ignored)} from {path}: the run decides them")
    return config


def user_by_name(username: str | None):
    """``--user``: None when not given; CommandError when no such user."""
    if not username:
        return None
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise CommandError(f"--user: no user named {username!r}")
    return user


class WatchTimeout(Exception):
    """Stopped waiting; the round or run goes on without the command."""


class _Bar:
    """One bar per stage: a new stage closes the last bar and opens its own."""

    def __init__(self, file):
        self.file, self.key, self.bar = file, None, None

    def show(self, key: str, label: str, done: int, total: int) -> None:
        if key != self.key:
            self.close()
            self.key = key
            self.bar = tqdm(total=total, desc=label, file=self.file, dynamic_ncols=True, leave=True)
        if self.bar.desc != label:
            self.bar.set_description(label, refresh=False)
        self.bar.total = total
        self.bar.n = min(done, total) if total else done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.key, self.bar = None, None


def _deadline(timeout: float | None) -> float | None:
    return time.monotonic() + timeout if timeout is not None else None


def _check(deadline: float | None, what: str) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise WatchTimeout(f"stopped waiting on {what}; it goes on (are the workers running?)")


def round_watch(*, training_round: TrainingRound, file, poll: float = 2.0, timeout: float | None = None) -> TrainingRound:
    """Show a bar for each stage until the round is done or failed; returns it then.

    Each poll also advances the round, so waiting works before beat's next tick (the transitions are idempotent).
    """
    bar, deadline = _Bar(file), _deadline(timeout)
    try:
        while True:
            training_round = training_round_advance(round_id=training_round.pk)
            progress = training_round_progress(training_round)
            if progress is not None:
                bar.show(progress.stage, f"{progress.stage}: {progress.what}", progress.done, progress.total)
            if training_round.stage not in ACTIVE_STAGES:
                return training_round
            _check(deadline, f"round {training_round.pk} '{training_round.name}' ({training_round.stage})")
            time.sleep(poll)
    finally:
        bar.close()


def run_watch(*, run: TrainingRun, file, poll: float = 2.0, timeout: float | None = None) -> TrainingRun:
    """Show the run's training steps until it has finished; returns it then."""
    bar, deadline = _Bar(file), _deadline(timeout)
    finished = (TrainingRun.Status.SUCCEEDED, TrainingRun.Status.FAILED, TrainingRun.Status.CANCELLED)
    try:
        while True:
            run.refresh_from_db()
            bar.show("train", f"training ({run.phase or run.status})", run.step,
                     run.total_steps or run.config.get("max_train_steps", 0))
            if run.status in finished:
                return run
            _check(deadline, f"run {run.pk} '{run.name}' ({run.status})")
            time.sleep(poll)
    finally:
        bar.close()
