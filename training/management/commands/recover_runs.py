from django.conf import settings
from django.core.management.base import BaseCommand

from training.services import training_runs_recover


class Command(BaseCommand):
    help = (
        "Send again every running training run whose worker has been silent for TRAINING_STALE_AFTER seconds "
        "(it died: SIGKILL, out of memory, a lost machine). A gpu worker takes each over from its latest "
        "checkpoint. celery beat does this every minute; run it by hand when beat is not running."
    )

    def handle(self, *args, **opts):
        sent = training_runs_recover()
        if sent:
            self.stdout.write(f"sent {len(sent)} run(s) again: {', '.join(map(str, sent))}")
        else:
            self.stdout.write(f"no running run has been silent for {settings.TRAINING_STALE_AFTER:g} s")
