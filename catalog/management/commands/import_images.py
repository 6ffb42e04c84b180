from django.core.management.base import BaseCommand, CommandError

from catalog.prompt_import import ImportFileError
from catalog.services import images_import


class Command(BaseCommand):
    help = (
        "Import images made elsewhere from a JSONL or CSV manifest (model, prompt_id or prompt, seed, path, "
        "sha256, sampler): every file checked first, then all stored in one transaction, or none. "
        "Running it again changes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("manifest", help="A .jsonl or .csv file; image paths are relative to its folder.")
        parser.add_argument("--prompts", default="", metavar="SET", help="Prompt set of lines without prompt_set.")
        parser.add_argument(
            "--create-models", action="store_true",
            help="Register models the manifest names but the catalog lacks, as external models (no weights).",
        )

    def handle(self, *args, manifest, prompts, create_models, **options):
        try:
            result = images_import(path=manifest, default_prompt_set=prompts, create_models=create_models)
        except ImportFileError as exc:
            raise CommandError(f"{exc} (nothing was imported)") from exc
        for name in result.models_created:
            self.stdout.write(f"registered external model '{name}'")
        self.stdout.write(
            self.style.SUCCESS(f"{result.created} images imported, {result.present} already present")
        )
