from django.core.management.base import BaseCommand, CommandError

from annotation.selectors import round_by_id_or_name
from evaluation.models import EvaluationRound
from evaluation.report_text import FORMATS, report_render, write_atomic
from evaluation.reports import evaluation_report_build, round_report_build
from evaluation.selectors import round_reportable
from evaluation.services import report_refresh


class Command(BaseCommand):
    help = (
        "Write an evaluation round's report, or with --round the report of one pairwise or alignment annotation "
        "round: the paper's table as text, CSV, JSON (every number) or booktabs LaTeX."
    )

    def add_arguments(self, parser):
        parser.add_argument("evaluation", nargs="?", metavar="EVALUATION", help="Evaluation round id or name.")
        parser.add_argument("--round", metavar="ROUND", help="An annotation round's id or name, instead of an evaluation.")
        parser.add_argument("--format", dest="fmt", choices=FORMATS, default="table")
        parser.add_argument("--out", help="Write to this file (atomically) instead of standard output.")
        parser.add_argument(
            "--resamples", type=int,
            help="Bootstrap resamples (default: the stored report's setting, 10,000 unless configured).",
        )
        parser.add_argument("--seed", type=int, default=0, help="Bootstrap seed (default 0).")

    def handle(self, *args, evaluation, round, fmt, out, resamples, seed, **options):
        if (evaluation is None) == (round is None):
            raise CommandError("EVALUATION: give an evaluation round, or an annotation round with --round (not both)")
        if resamples is not None and resamples < 1:
            raise CommandError(f"--resamples: must be at least 1, got {resamples}")
        if round is not None:
            round_ = round_by_id_or_name(round)
            if round_ is None:
                raise CommandError(f"--round: no annotation round with id or name {round!r}")
            if not round_reportable(round_):
                raise CommandError(
                    f"--round: round {round_.name!r} is a {round_.kind} round; reports are made of pairwise and "
                    "alignment rounds (a best/worst round's pairs go to export_preferences)"
                )
            report = round_report_build(round_=round_, n_resamples=resamples, seed=seed).to_dict()
        else:
            report = self._evaluation_report(evaluation, resamples=resamples, seed=seed)
        text = report_render(report, fmt)
        if out:
            write_atomic(out, text)
            self.stderr.write(self.style.SUCCESS(f"wrote {out}"))
        else:
            self.stdout.write(text, ending="")

    @staticmethod
    def _evaluation_report(value: str, *, resamples, seed) -> dict:
        found = EvaluationRound.objects.filter(pk=int(value)).first() if value.isdigit() else None
        found = found or EvaluationRound.objects.filter(name=value).first()
        if found is None:
            raise CommandError(f"EVALUATION: no evaluation round with id or name {value!r}")
        if resamples is None and seed == 0:
            # The report the page shows: the stored one, recomputed here first if it is behind.
            return report_refresh(evaluation=found).data
        return evaluation_report_build(evaluation=found, n_resamples=resamples, seed=seed).to_dict()
