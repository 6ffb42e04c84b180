"""Train a base model on a dataset and register the checkpoint, without an annotation round."""

from __future__ import annotations

import argparse
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from catalog.models import ModelVersion
from catalog.services import ExternalModelError
from training.cli import WatchTimeout, run_settings, run_watch, user_by_name
from training.engine.config import ConfigError
from training.models import TrainingRun
from training.services import TrainingRunRefused, training_run_create

NOTHING = " (nothing was queued)"


class Command(BaseCommand):
    help = (
        "Train --base on --data (a preference manifest or parquet, or an SFT image folder) on a gpu worker and register "
        "the checkpoint as model NAME. --wait blocks with a bar of the training steps."
    )

    def add_arguments(self, parser):
        parser.add_argument("--base", "--base-model", dest="base_model", required=True, help="Model version to train.")
        parser.add_argument("--data", required=True, metavar="DATASET",
                            help="A JSONL manifest or parquet of pairs, or an image folder with metadata.jsonl.")
        parser.add_argument("--config", required=True, help="TOML or JSON training config (see training/configs/).")
        parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                            help="Override one config setting; repeatable.")
        parser.add_argument("--name", required=True, help="Name of the run and of the model it produces.")
        parser.add_argument("--wait", action="store_true", help="Block until the run has finished.")
        parser.add_argument("--timeout", type=float, help="Seconds --wait waits at most.")
        parser.add_argument("--poll", type=float, default=2.0, help=argparse.SUPPRESS)
        parser.add_argument("--user", help="Username recorded as the creator.")

    def handle(self, *args, **opts):
        base = ModelVersion.objects.filter(name=opts["base_model"]).first()
        if base is None:
            raise CommandError(f"--base: no model version named {opts['base_model']!r}")
        data = Path(opts["data"]).expanduser().resolve()
        if not data.exists():
            raise CommandError(f"--data: {opts['data']} does not exist")
        user = user_by_name(opts["user"])
        try:
            config = run_settings(opts["config"], opts["overrides"], stderr=self.stderr)
            with transaction.atomic():
                run = training_run_create(
                    name=opts["name"], base_model=base, dataset_path=str(data), config=config, created_by=user,
                )
        except ConfigError as exc:
            raise CommandError(f"config: {exc}{NOTHING}") from exc
        except ExternalModelError as exc:
            raise CommandError(f"--base: {exc}{NOTHING}") from exc
        except TrainingRunRefused as exc:
            raise CommandError(f"--{exc.field.replace('_', '-')}: {exc}{NOTHING}") from exc
        self.stdout.write(f"training run {run.pk} '{run.name}' queued on the gpu queue; output {run.output_dir}")
        if not opts["wait"]:
            self.stdout.write(f"watch it at /admin/training/trainingrun/{run.pk}/change/")
            return
        try:
            run = run_watch(run=run, file=self.stderr._out, poll=opts["poll"], timeout=opts["timeout"])
        except WatchTimeout as exc:
            raise CommandError(str(exc)) from exc
        if run.status != TrainingRun.Status.SUCCEEDED:
            raise CommandError(f"training run {run.pk} '{run.name}' {run.status}: {run.error or 'no reason given'}")
        self.stdout.write(f"training run {run.pk} '{run.name}' succeeded: model '{run.output_model.name}'")
