"""Send the tasks that wait in the outbox (after a broker outage), now."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from config.celery import app
from outbox.services import messages_send


class Command(BaseCommand):
    help = (
        "Send every task that waits in the outbox because the broker was unreachable when it was "
        "enqueued. Exits non-zero when some are still pending."
    )

    def handle(self, *args, **options):
        result = messages_send(app=app)
        self.stdout.write(f"sent {result.sent} task(s) from the outbox")
        if result.pending:
            reason = f": {result.error}" if result.error else ""
            raise CommandError(f"{result.pending} task(s) still pending in the outbox{reason}")
        self.stdout.write("0 task(s) still pending")
