"""Close a round before every item has K judgments, and count its items under a stated rule."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from annotation import voting
from annotation.errors import AnnotationError
from annotation.selectors import round_by_id_or_name
from annotation.services.rounds import round_close


class Command(BaseCommand):
    help = (
        "Close ROUND now. count-partial: an item short of K is decided by the majority of the votes it has "
        "when it has at least ceil(K/2)+1 of them, else it is undecided; drop-partial: items short of K are left out."
    )

    def add_arguments(self, parser):
        parser.add_argument("round", help="round id or name")
        parser.add_argument("--rule", required=True, help=f"one of {', '.join(voting.CLOSE_RULES)}")

    def handle(self, *args, **opts):
        round_ = round_by_id_or_name(opts["round"])
        if round_ is None:
            raise CommandError(f"ROUND: no round with id or name {opts['round']!r}")
        try:
            closing = round_close(round_=round_, rule=opts["rule"])
        except AnnotationError as exc:
            field = getattr(exc, "field", None)
            raise CommandError(f"--{field}: {exc.detail}" if field else exc.detail) from None
        self.stdout.write(f"{round_.name}: {closing.line()}")
