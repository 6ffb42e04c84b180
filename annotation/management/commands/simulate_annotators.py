"""Judge rounds with synthetic annotators, through the same services as people."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from annotation.models import Round
from annotation.selectors import round_by_id_or_name, round_summary, rounds_open
from annotation.simulation import Policy, PolicyError, round_simulate, synthetic_annotators
from catalog.models import ModelVersion


class Command(BaseCommand):
    help = (
        "Work ROUND (or several, or --all-open) with N synthetic annotators (accounts flagged synthetic) "
        "until each is done or --max-judgments."
    )

    def add_arguments(self, parser):
        parser.add_argument("rounds", nargs="*", metavar="ROUND", help="round ids or names")
        parser.add_argument("--all-open", action="store_true", help="every open round")
        parser.add_argument("--annotators", type=int, default=5)
        parser.add_argument("--policy", default="random", help="random | prefer_model:NAME | noisy_oracle")
        parser.add_argument("--noise", type=float, default=0.2, help="chance of a slip per answer, between 0 and 1")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--max-judgments", type=int, default=None, help="per round")
        parser.add_argument("--prefix", default="synthetic", help="account names: PREFIX-001, PREFIX-002, ...")

    def handle(self, *args, **opts):
        rounds = self._rounds(opts["rounds"], opts["all_open"])
        if opts["annotators"] < 1:
            raise CommandError("--annotators must be at least 1")
        try:
            policy = Policy.parse(opts["policy"], noise=opts["noise"])
            for round_ in rounds:
                policy.check_round(round_)
        except PolicyError as exc:
            raise CommandError(str(exc)) from exc
        if policy.kind == "prefer_model" and not ModelVersion.objects.filter(name=policy.model).exists():
            raise CommandError(f"--policy: no model version named {policy.model!r}")
        users = synthetic_annotators(count=opts["annotators"], prefix=opts["prefix"])
        for round_ in rounds:
            try:
                result = round_simulate(round_=round_, annotators=users, policy=policy, seed=opts["seed"],
                                        max_judgments=opts["max_judgments"])
            except PolicyError as exc:
                raise CommandError(str(exc)) from exc
            summary = round_summary(round_=round_)
            self.stdout.write(
                f"{result.judgments} synthetic judgments by {result.annotators} annotators; round {round_.pk} "
                f"'{round_.name}': {summary.complete}/{summary.items} items complete, {summary.pairs} pairs, "
                f"{summary.no_majority} without majority, {summary.synthetic_judgments} synthetic judgments counted"
            )

    def _rounds(self, names: list[str], all_open: bool) -> list[Round]:
        if all_open == bool(names):
            raise CommandError("name one or more rounds, or give --all-open")
        if all_open:
            rounds = rounds_open()
            if not rounds:
                raise CommandError("--all-open: no round is open")
            return rounds
        rounds = []
        for name in names:
            round_ = round_by_id_or_name(name)
            if round_ is None:
                raise CommandError(f"no round with id or name {name!r}")
            if round_.status != Round.Status.OPEN:
                raise CommandError(f"round {round_.pk} is {round_.status}, not open")
            rounds.append(round_)
        return rounds
