from django.core.management.base import BaseCommand, CommandError

from evaluation.models import EvaluationRound
from evaluation.report_text import FORMATS, report_render, write_atomic
from evaluation.reports import evaluation_report_build
from evaluation.services import report_refresh


class Command(BaseCommand):
    help = "Write an evaluation round's report: the paper's table as text, CSV, JSON (every number) or booktabs LaTeX."

    def add_arguments(self, parser):
        parser.add_argument("round", help="Evaluation round id or name.")
        parser.add_argument("--format", dest="fmt", choices=FORMATS, default="table")
        parser.add_argument("--out", help="Write to this file (atomically) instead of standard output.")
        parser.add_argument(
            "--resamples", type=int,
            help="Bootstrap resamples (default: the stored report's setting, 10,000 unless configured).",
        )
        parser.add_argument("--seed", type=int, default=0, help="Bootstrap seed (default 0).")

    def handle(self, *args, round, fmt, out, resamples, seed, **options):
        evaluation = None
        if round.isdigit():
            evaluation = EvaluationRound.objects.filter(pk=int(round)).first()
        evaluation = evaluation or EvaluationRound.objects.filter(name=round).first()
        if evaluation is None:
            raise CommandError(f"ROUND: no evaluation round with id or name {round!r}")
        if resamples is not None and resamples < 1:
            raise CommandError(f"--resamples: must be at least 1, got {resamples}")
        if resamples is None and seed == 0:
            # The report the page shows: the stored one, recomputed here first if it is behind.
            report = report_refresh(evaluation=evaluation).data
        else:
            report = evaluation_report_build(evaluation=evaluation, n_resamples=resamples, seed=seed).to_dict()
        text = report_render(report, fmt)
        if out:
            write_atomic(out, text)
            self.stderr.write(self.style.SUCCESS(f"wrote {out}"))
        else:
            self.stdout.write(text, ending="")
