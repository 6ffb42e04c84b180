from django.core.management.base import BaseCommand, CommandError

from catalog.prompt_import import FORMATS, PromptImportError
from catalog.services import PROMPT_PRESET_GROUPS, PROMPT_PRESETS, prompt_preset_path, prompts_import


class Command(BaseCommand):
    help = "Import prompts (and alignment questions) from a file, atomically and idempotently."

    def add_arguments(self, parser):
        parser.add_argument("path", nargs="?", help="PartiPrompts TSV, DSG-1k CSV, or a JSONL/CSV prompt file.")
        parser.add_argument("--set", dest="set_name", help="Prompt set to import into (created if missing).")
        parser.add_argument("--format", dest="fmt", choices=FORMATS, help="Defaults to a guess from the file.")
        parser.add_argument("--preset", choices=sorted([*PROMPT_PRESETS, *PROMPT_PRESET_GROUPS]),
                            help="Import a prompt set shipped with the project (toy: both toy-world splits).")

    def handle(self, *args, path, set_name, fmt, preset, **options):
        if preset in PROMPT_PRESET_GROUPS:
            if path or set_name:
                raise CommandError(f"--preset {preset} imports several sets; give no PATH or --set with it")
            for member in PROMPT_PRESET_GROUPS[preset]:
                self.handle(path=None, set_name=None, fmt=None, preset=member, **options)
            return
        if preset:
            if path:
                raise CommandError("give either PATH or --preset, not both")
            spec = PROMPT_PRESETS[preset]
            path, fmt, source = prompt_preset_path(preset), spec["format"], spec["source"]
            set_name = set_name or spec["set"]
        else:
            if not path:
                raise CommandError("give a PATH or --preset")
            if not set_name:
                raise CommandError("--set is required with a PATH")
            source = ""
        try:
            result = prompts_import(path=path, set_name=set_name, fmt=fmt, source=source)
        except PromptImportError as exc:
            raise CommandError(f"{exc} (nothing was imported)") from exc
        shown = result.warnings if options["verbosity"] > 1 else result.warnings[:5]
        for warning in shown:
            self.stderr.write(self.style.WARNING(f"warning: {warning}"))
        if len(result.warnings) > len(shown):
            self.stderr.write(self.style.WARNING(f"... and {len(result.warnings) - len(shown)} more warnings (-v 2 lists all)"))
        self.stdout.write(
            self.style.SUCCESS(
                f"{result.prompt_set.name}: {result.created} prompts created, {result.updated} updated, "
                f"{result.unchanged} unchanged; {result.questions_created} questions created, "
                f"{result.questions_updated} updated"
            )
        )
