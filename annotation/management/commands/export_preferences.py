"""Write a round's winner/loser pairs as an immutable preference dataset."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from annotation.exports import preferences_export
from annotation.selectors import round_by_id_or_name
from annotation.services import AnnotationError


class Command(BaseCommand):
    help = "Export ROUND's pairs to DIR/round-<id>-<version>/ (manifest.jsonl, pickapic.parquet, images/)."

    def add_arguments(self, parser):
        parser.add_argument("round", help="round id or name")
        parser.add_argument("--out", required=True, help="folder that receives the dataset folder")
        parser.add_argument("--no-recompute", action="store_true", help="use the stored aggregates as they are")

    def handle(self, *args, **opts):
        round_ = round_by_id_or_name(opts["round"])
        if round_ is None:
            raise CommandError(f"no round with id or name {opts['round']!r}")
        try:
            result = preferences_export(round_=round_, out_dir=opts["out"], recompute=not opts["no_recompute"])
        except AnnotationError as exc:
            raise CommandError(exc.detail) from exc
        state = "written" if result.created else "already there (same content)"
        self.stdout.write(
            f"{result.path} {state}: {result.pairs} pairs from {result.items_complete} complete items "
            f"({result.ties} ties, {result.no_majority} without majority, {result.ambiguous} ambiguous); "
            f"{result.n_synthetic_judgments} synthetic judgments in the pairs; version {result.version}"
        )
