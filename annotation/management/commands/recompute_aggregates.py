"""Recompute every aggregate of a round (after gold answers or the exclusion threshold change)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from annotation.selectors import round_by_id_or_name
from annotation.services import round_aggregate


class Command(BaseCommand):
    help = "Recompute the majority result of every item of ROUND."

    def add_arguments(self, parser):
        parser.add_argument("round", help="round id or name")

    def handle(self, *args, **opts):
        round_ = round_by_id_or_name(opts["round"])
        if round_ is None:
            raise CommandError(f"no round with id or name {opts['round']!r}")
        summary = round_aggregate(round_=round_)
        self.stdout.write(
            f"{summary.complete}/{summary.items} items complete: {summary.pairs} pairs, {summary.ties} ties, "
            f"{summary.no_majority} without majority, {summary.ambiguous} ambiguous; {summary.judgments} judgments, "
            f"{summary.synthetic_judgments} synthetic in complete items; excluded annotators: {summary.excluded_annotators}"
        )
