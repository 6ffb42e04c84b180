from django.core.management.base import BaseCommand, CommandError

from catalog.generation import pool_generation_create
from catalog.models import ModelVersion, PromptSet
from catalog.services import ExternalModelError
from catalog.selectors import prompts_select


class Command(BaseCommand):
    help = (
        "Generate images on the gpu queue to collect preferences on: N seeds per prompt of one model "
        "(e.g. 5 for best/worst rounds). Running it again queues nothing new; existing images are reused."
    )

    def add_arguments(self, parser):
        parser.add_argument("--model", required=True, help="Model version name.")
        parser.add_argument("--prompts", required=True, metavar="SET", help="Prompt set name.")
        parser.add_argument("--images-per-prompt", type=int, default=5)
        parser.add_argument("--limit", type=int, help="A seeded sample of this many prompts.")
        parser.add_argument("--seed", type=int, default=0, help="Derives the image seeds and the prompt sample.")

    def handle(self, *args, model, prompts, images_per_prompt, limit, seed, **options):
        model_version = ModelVersion.objects.filter(name=model).first()
        if model_version is None:
            raise CommandError(f"--model: no model version named {model!r}")
        prompt_set = PromptSet.objects.filter(name=prompts).first()
        if prompt_set is None:
            raise CommandError(f"--prompts: no prompt set named {prompts!r}")
        if images_per_prompt < 1:
            raise CommandError("--images-per-prompt: must be at least 1")
        selected = prompts_select(prompt_set=prompt_set, limit=limit, seed=seed)
        try:
            new, existing = pool_generation_create(
                model_version=model_version, prompts=selected, images_per_prompt=images_per_prompt, seed=seed
            )
        except ExternalModelError as exc:
            raise CommandError(f"--model: {exc}") from exc
        self.stdout.write(
            f"{new} images queued on the gpu queue for '{model}' ({existing} already queued or made) "
            f"over {len(selected)} prompts; then: create_round --kind best_worst --models {model} "
            f"--n {images_per_prompt} --prompt-set {prompt_set.name!r}"
        )
