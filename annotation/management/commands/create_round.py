"""Build an annotation round from images already in the database."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from annotation.criteria import Criterion
from annotation.errors import AnnotationError
from annotation.kinds import KINDS, item_kind
from annotation.models import Round
from annotation.services.rounds import round_create
from catalog.models import Image, ModelVersion


class Command(BaseCommand):
    help = (
        "Create a round. pairwise: one item per (prompt, seed) that both --models have an image for; "
        "best_worst: items of --n images of one prompt from one model; alignment: one item per image "
        "whose prompt has alignment questions."
    )

    def add_arguments(self, parser):
        parser.add_argument("--kind", required=True, choices=list(KINDS))
        parser.add_argument("--name", required=True)
        parser.add_argument("--models", nargs="+", required=True, metavar="MODEL", help="model version names")
        parser.add_argument("--criterion", choices=[c.value for c in Criterion], default="",
                            help="pairwise only")
        parser.add_argument("--prompt-set", help="only prompts of this set")
        parser.add_argument("--n", type=int, default=5, help="images per best_worst item (default 5)")
        parser.add_argument("--k", type=int, default=5, help="judgments per item (default 5)")
        parser.add_argument("--lease-ttl", type=int, default=600, help="lease lifetime in seconds")
        parser.add_argument("--no-majority-rule", choices=["tie", "mean_score"], default="tie")
        parser.add_argument("--gold-rate", type=float, default=0.0)
        parser.add_argument("--gold-min-accuracy", type=float, default=None)
        parser.add_argument("--status", choices=[s for s, _ in Round.Status.choices], default="open")
        parser.add_argument("--limit", type=int, default=None, help="at most this many items")

    def handle(self, *args, **opts):
        kind = item_kind(opts["kind"])
        models = []
        for name in opts["models"]:
            model = ModelVersion.objects.filter(name=name).first()
            if model is None:
                raise CommandError(f"--models: no model version named {name!r}")
            models.append(model)
        problem = kind.models_check(len(models))
        if problem:
            raise CommandError(f"--models: {problem}")
        criterion = opts["criterion"] if kind.takes_criterion else ""
        try:
            kind.round_check(criterion=criterion)
            images = Image.objects.filter(model_version__in=models).order_by("prompt_id", "seed", "id")
            if opts["prompt_set"]:
                images = images.filter(prompt__prompt_set__name=opts["prompt_set"])
            rows = list(images.values_list("id", "prompt_id", "seed", "model_version_id"))
            specs = kind.items_build(rows=rows, model_ids=[m.pk for m in models], n=opts["n"])
            if opts["limit"] is not None:
                specs = specs[: opts["limit"]]
            if not specs:
                raise CommandError(f"no {kind.value} items can be built from the images of {', '.join(opts['models'])}")
            round_ = round_create(
                name=opts["name"], kind=kind.value, criterion=criterion,
                k=opts["k"], lease_ttl_seconds=opts["lease_ttl"], no_majority_rule=opts["no_majority_rule"],
                gold_rate=opts["gold_rate"], gold_min_accuracy=opts["gold_min_accuracy"], status=opts["status"],
                items=specs,
            )
        except AnnotationError as exc:
            raise CommandError(f"--{(exc.field or 'round').replace('_', '-')}: {exc.detail}") from exc
        self.stdout.write(f"round {round_.pk} {round_.name!r}: {len(specs)} {kind.value} items, K={round_.k}")
