from django.core.management.base import BaseCommand, CommandError

from catalog.models import ModelVersion
from catalog.services import RegistrationError, model_register


class Command(BaseCommand):
    help = "Register a local diffusers pipeline directory as a model version (reads JSON only)."

    def add_arguments(self, parser):
        parser.add_argument("path", help="Diffusers pipeline directory (with model_index.json).")
        parser.add_argument("--name", required=True, help="Unique name for this model version.")
        parser.add_argument("--parent", help="Name of the model this one was trained from.")
        parser.add_argument("--notes", default="")

    def handle(self, *args, path, name, parent, notes, **options):
        parent_model = None
        if parent:
            parent_model = ModelVersion.objects.filter(name=parent).first()
            if parent_model is None:
                raise CommandError(f"--parent: no model named '{parent}'")
        try:
            model = model_register(path=path, name=name, parent=parent_model, notes=notes)
        except RegistrationError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Registered '{model.name}': family={model.family}, prediction={model.prediction_type}, "
                f"pipeline={model.pipeline_class}"
            )
        )
