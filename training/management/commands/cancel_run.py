from django.core.management.base import BaseCommand, CommandError

from training.models import TrainingRun
from training.services import RunStateError, training_run_cancel


class Command(BaseCommand):
    help = (
        "Cancel a training run: a queued one at once, a running one at its next step boundary. It ends "
        "'cancelled', registers no model and keeps its checkpoints for a later resume."
    )

    def add_arguments(self, parser):
        parser.add_argument("run", help="Training run id or name.")

    def handle(self, *args, **opts):
        key = opts["run"]
        run = TrainingRun.objects.filter(pk=int(key)).first() if key.isdigit() else None
        run = run or TrainingRun.objects.filter(name=key).first()
        if run is None:
            raise CommandError(f"no training run with id or name {key!r}")
        try:
            run = training_run_cancel(run=run)
        except RunStateError as exc:
            raise CommandError(str(exc)) from exc
        if run.status == TrainingRun.Status.CANCELLED:
            self.stdout.write(f"run {run.pk} '{run.name}' cancelled (it had not started)")
        else:
            self.stdout.write(
                f"run {run.pk} '{run.name}': cancel requested; its worker stops it at the next step boundary "
                f"(within TRAINING_PROGRESS_INTERVAL) and keeps its checkpoints"
            )
