"""Build an annotation round from images already in the database."""

from __future__ import annotations

from collections import defaultdict

from django.core.management.base import BaseCommand, CommandError

from annotation import services
from annotation.models import Round
from catalog.models import AlignmentQuestion, Image, ModelVersion


class Command(BaseCommand):
    help = (
        "Create a round. pairwise: one item per (prompt, seed) that both --models have an image for; "
        "best_worst: items of --n images of one prompt from one model; alignment: one item per image "
        "whose prompt has alignment questions."
    )

    def add_arguments(self, parser):
        parser.add_argument("--kind", required=True, choices=[k for k, _ in Round.Kind.choices])
        parser.add_argument("--name", required=True)
        parser.add_argument("--models", nargs="+", required=True, metavar="MODEL", help="model version names")
        parser.add_argument("--criterion", choices=[c for c, _ in Round.Criterion.choices], default="",
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
        kind = opts["kind"]
        models = []
        for name in opts["models"]:
            model = ModelVersion.objects.filter(name=name).first()
            if model is None:
                raise CommandError(f"--models: no model version named {name!r}")
            models.append(model)
        if kind == Round.Kind.PAIRWISE and len(models) != 2:
            raise CommandError("--models: a pairwise round compares exactly two models")
        if kind == Round.Kind.BEST_WORST and len(models) != 1:
            raise CommandError("--models: a best_worst round takes the images of one model")
        if kind == Round.Kind.PAIRWISE and not opts["criterion"]:
            raise CommandError("--criterion is required for pairwise rounds (visual_flaws or visual_appeal)")
        images = Image.objects.filter(model_version__in=models).order_by("prompt_id", "seed", "id")
        if opts["prompt_set"]:
            images = images.filter(prompt__prompt_set__name=opts["prompt_set"])
        rows = list(images.values_list("id", "prompt_id", "seed", "model_version_id"))
        specs = build_specs(kind=kind, rows=rows, model_ids=[m.pk for m in models], n=opts["n"])
        if opts["limit"] is not None:
            specs = specs[: opts["limit"]]
        if not specs:
            raise CommandError(f"no {kind} items can be built from the images of {', '.join(opts['models'])}")
        try:
            round_ = services.round_create(
                name=opts["name"], kind=kind, criterion=opts["criterion"] if kind == Round.Kind.PAIRWISE else "",
                k=opts["k"], lease_ttl_seconds=opts["lease_ttl"], no_majority_rule=opts["no_majority_rule"],
                gold_rate=opts["gold_rate"], gold_min_accuracy=opts["gold_min_accuracy"], status=opts["status"],
                items=specs,
            )
        except services.AnnotationError as exc:
            raise CommandError(f"{getattr(exc, 'field', 'round')}: {exc.detail}") from exc
        self.stdout.write(f"round {round_.pk} {round_.name!r}: {len(specs)} {kind} items, K={round_.k}")


def build_specs(*, kind: str, rows: list[tuple[int, int, int, int]], model_ids: list[int], n: int) -> list[services.ItemSpec]:
    """rows: (image id, prompt id, seed, model id), sorted by prompt, seed, id."""
    specs = []
    if kind == Round.Kind.PAIRWISE:
        by_key: dict[tuple[int, int], dict[int, int]] = defaultdict(dict)
        for image_id, prompt_id, seed, model_id in rows:
            by_key[(prompt_id, seed)].setdefault(model_id, image_id)
        for (prompt_id, _seed), per_model in sorted(by_key.items()):
            if all(m in per_model for m in model_ids):
                specs.append(services.ItemSpec(prompt_id=prompt_id, image_ids=tuple(per_model[m] for m in model_ids)))
    elif kind == Round.Kind.BEST_WORST:
        if n < 3:
            raise CommandError("--n: a best_worst item needs at least 3 images")
        by_prompt: dict[int, list[int]] = defaultdict(list)
        for image_id, prompt_id, _seed, _model in rows:
            by_prompt[prompt_id].append(image_id)
        for prompt_id, image_ids in sorted(by_prompt.items()):
            for start in range(0, len(image_ids) - n + 1, n):
                specs.append(services.ItemSpec(prompt_id=prompt_id, image_ids=tuple(image_ids[start:start + n])))
    else:
        with_questions = set(
            AlignmentQuestion.objects.filter(prompt_id__in={r[1] for r in rows}).values_list("prompt_id", flat=True)
        )
        specs = [
            services.ItemSpec(prompt_id=prompt_id, image_ids=(image_id,))
            for image_id, prompt_id, _seed, _model in rows if prompt_id in with_questions
        ]
    return specs
