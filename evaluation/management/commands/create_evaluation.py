from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from catalog.models import ModelVersion, PromptSet
from evaluation.models import CRITERIA, EvaluationRound
from evaluation.services import EvaluationError, evaluation_start
from evaluation.summaries import describe_missing, describe_start


class Command(BaseCommand):
    help = (
        "Create an evaluation round: one image job per prompt per model (same seed for every model), "
        "pairwise visual flaws and visual appeal items for every pair of models, alignment items for "
        "prompts with questions (those of --criteria). Model A of each pair is the one listed first."
    )

    def add_arguments(self, parser):
        parser.add_argument("--models", nargs="+", required=True, metavar="MODEL", help="Model version names, in order.")
        parser.add_argument("--prompts", required=True, metavar="SET", help="Prompt set name.")
        parser.add_argument("--limit", type=int, help="Evaluate a seeded sample of this many prompts.")
        parser.add_argument("--seed", type=int, default=0, help="Derives each prompt's image seed (default 0).")
        parser.add_argument("--k", type=int, default=5, help="Judgments per item (default 5).")
        parser.add_argument(
            "--criteria", nargs="+", default=list(CRITERIA), metavar="CRITERION",
            help=f"What to measure, one annotation round each: {', '.join(CRITERIA)} (default: all three).",
        )
        parser.add_argument("--name", default="", help="Name of the evaluation (default: models, set and seed).")
        parser.add_argument(
            "--from-existing", action="store_true",
            help="Fill the jobs from existing images (see --seed-policy) and create the rounds now; "
            "needed for external models.",
        )
        parser.add_argument(
            "--seed-policy", choices=EvaluationRound.SeedPolicy.values, default=EvaluationRound.SeedPolicy.EVALUATION,
            help="With --from-existing: 'evaluation' (default) takes images with the prompt's evaluation seed; "
            "'any' takes any image of the (model, prompt), e.g. imported ones (the lowest seed where several).",
        )
        parser.add_argument("--user", help="Username recorded as the creator.")

    def handle(self, *args, models, prompts, limit, seed, k, criteria, name, from_existing, seed_policy, user,
               **options):
        found = {m.name: m for m in ModelVersion.objects.filter(name__in=models)}
        unknown = [m for m in models if m not in found]
        if unknown:
            raise CommandError(f"--models: no model version named {', '.join(map(repr, unknown))}")
        prompt_set = PromptSet.objects.filter(name=prompts).first()
        if prompt_set is None:
            raise CommandError(f"--prompts: no prompt set named {prompts!r}")
        created_by = None
        if user:
            created_by = get_user_model().objects.filter(username=user).first()
            if created_by is None:
                raise CommandError(f"--user: no user named {user!r}")
        try:
            result = evaluation_start(
                model_versions=[found[m] for m in models], prompt_set=prompt_set, limit=limit, seed=seed, k=k,
                name=name, criteria=criteria, from_existing=from_existing, seed_policy=seed_policy,
                created_by=created_by,
            )
        except EvaluationError as exc:
            raise CommandError(f"{exc} (nothing was created)") from exc
        for line in describe_start(result):
            self.stdout.write(line)
        if result.build and result.build.missing:
            for line in describe_missing(result.build.missing):
                self.stderr.write(self.style.WARNING(line))
        self.stdout.write(self.style.SUCCESS(f"created evaluation {result.evaluation.pk}"))
