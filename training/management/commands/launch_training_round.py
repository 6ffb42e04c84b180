"""Launch a training round: the whole loop from a base model and a prompt set, or training on a collected round."""

from __future__ import annotations

import argparse

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from annotation.errors import AnnotationError
from annotation.selectors import round_by_id_or_name
from catalog.models import ModelVersion, PromptSet
from training.cli import WatchTimeout, round_watch, run_settings, user_by_name
from training.engine.config import ConfigError
from training.models import TrainingRound
from training.rounds import (
    TrainingRoundError, method_overrides, training_round_create, training_round_iterate, training_round_launch,
    training_round_by_id_or_name, training_round_next_name,
)

NOTHING = " (nothing was launched)"
# The flag of each field a refusal names (training.rounds.TrainingRoundError.field); None: the message says it all.
FLAGS = {
    "base_model": "--base-model", "name": "--name", "method": "--method", "pixel_weight": "--pixel-weight",
    "images_per_prompt": "--images-per-prompt", "k": "--k", "simulated_annotators": "--simulate-annotators",
    "limit": "--limit", "evaluate_limit": "--evaluate-limit", "prompt_set": "--prompts", "config": "config",
    "previous": "--iterate", "round": None, "request": None,
}


def refusal(exc: TrainingRoundError) -> str:
    """The refusal in the command's words: the flag at fault, then what is wrong with it."""
    flag = FLAGS.get(exc.field, exc.field)
    return f"{flag}: {exc.detail}" if flag else exc.detail


class Command(BaseCommand):
    help = (
        "Run a whole training round: generate --images-per-prompt images per prompt of --base on the gpu queue, open a "
        "best/worst round (K = --k) over them, export its winner/loser pairs when it is complete, train with --method "
        "(latent term, plus the pixel term unless --pixel-weight 0), register the new model and evaluate it against "
        "--base. The stages move on by themselves (celery beat); --wait blocks with a bar per stage. "
        "The older form, ROUND --base-model M --config F --name N, trains on a collected round."
    )

    def add_arguments(self, parser):
        parser.add_argument("round", nargs="?", help="A collected annotation round (id or name): train on its pairs.")
        parser.add_argument("--base", "--base-model", dest="base_model", help="Model version to post-train.")
        parser.add_argument("--prompts", metavar="SET", help="Prompt set to generate the round's images for.")
        parser.add_argument("--method", choices=TrainingRound.Method.values, help="Objective of both terms.")
        parser.add_argument("--pixel-weight", type=float, default=8.0,
                            help="μ (λ for sft) of the pixel term; 0 trains the latent term alone (default 8).")
        parser.add_argument("--limit", type=int, help="A seeded sample of this many prompts.")
        parser.add_argument("--images-per-prompt", type=int, default=5)
        parser.add_argument("--k", type=int, default=5, help="Judgments per best/worst item.")
        parser.add_argument("--seed", type=int, default=0, help="Derives the prompt sample and the image seeds.")
        parser.add_argument("--config", help="TOML or JSON training config (see training/configs/).")
        parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                            help="Override one config setting, after --method; repeatable.")
        parser.add_argument("--name", help="Name of the round, its run and the model it produces.")
        parser.add_argument("--evaluate-on", metavar="PROMPT_SET",
                            help="Evaluate the new model against the base on this set (whole rounds: default --prompts).")
        parser.add_argument("--evaluate-limit", type=int, help="Evaluate on a seeded sample of this many prompts.")
        parser.add_argument("--evaluate-seed", type=int, default=0)
        parser.add_argument("--simulate-annotators", metavar="POLICY", default="",
                            help="Have K synthetic annotators judge the best/worst round as soon as it opens "
                                 "(noisy_oracle, random or prefer_model:NAME): demos and toy studies.")
        parser.add_argument("--iterate", metavar="TRAINING_ROUND",
                            help="Start the next round: that round's settings, its new model as the base.")
        parser.add_argument("--watch", metavar="TRAINING_ROUND", help="Wait on a launched round, as --wait does.")
        parser.add_argument("--wait", action="store_true", help="Block, with a bar per stage, until the round is done.")
        parser.add_argument("--timeout", type=float, help="Seconds --wait waits at most.")
        parser.add_argument("--poll", type=float, default=2.0, help=argparse.SUPPRESS)
        parser.add_argument("--user", help="Username recorded as the creator.")

    def handle(self, *args, **opts):
        user = user_by_name(opts["user"])
        if opts["watch"]:
            return self._wait(self._training_round(opts["watch"], "--watch"), opts)
        if opts["round"]:
            return self._from_collected_round(opts, user)
        try:
            with transaction.atomic():
                training_round = self._whole_round(opts, user)
        except ConfigError as exc:
            raise CommandError(f"config: {exc}{NOTHING}") from exc
        except TrainingRoundError as exc:
            raise CommandError(f"{refusal(exc)}{NOTHING}") from exc
        self.stdout.write(
            f"training round {training_round.pk} '{training_round.name}': {training_round.images_per_prompt} images "
            f"for each of {len(training_round.prompt_ids)} prompts of '{training_round.prompt_set.name}' queued on the "
            f"gpu queue for '{training_round.base_model.name}'"
        )
        if training_round.evaluate_on_id == training_round.prompt_set_id:
            self.stderr.write("the new model is evaluated on the training prompts; give --evaluate-on a held-out set")
        if opts["wait"]:
            return self._wait(training_round, opts)
        self.stdout.write(
            f"watch it at /admin/training/traininground/{training_round.pk}/change/ "
            f"or with: manage.py launch_training_round --watch {training_round.pk}"
        )

    def _whole_round(self, opts, user) -> TrainingRound:
        if opts["iterate"]:
            given = [flag for flag in ("base_model", "prompts", "method", "config") if opts[flag]]
            if given:
                raise TrainingRoundError(f"--{given[0].replace('_', '-')}: --iterate takes every setting from its round")
            previous = self._training_round(opts["iterate"], "--iterate")
            return training_round_iterate(previous=previous, name=opts["name"], created_by=user)
        missing = [flag for flag in ("base_model", "prompts", "method") if not opts[flag]]
        if missing:
            raise TrainingRoundError(
                f"--{missing[0].replace('_', '-')} is required (or give a collected ROUND, or --iterate)"
            )
        base = self._model(opts["base_model"])
        prompt_set = self._prompt_set(opts["prompts"], "--prompts")
        evaluate_on = self._prompt_set(opts["evaluate_on"], "--evaluate-on") if opts["evaluate_on"] else None
        settings = method_overrides(method=opts["method"], pixel_weight=opts["pixel_weight"]) + opts["overrides"]
        config = run_settings(opts["config"], settings, stderr=self.stderr)
        return training_round_create(
            name=opts["name"] or training_round_next_name(None, base_model=base, method=opts["method"]),
            base_model=base, prompt_set=prompt_set, method=opts["method"], pixel_weight=opts["pixel_weight"],
            config=config, limit=opts["limit"], images_per_prompt=opts["images_per_prompt"], k=opts["k"],
            seed=opts["seed"], evaluate_on=evaluate_on, evaluate_limit=opts["evaluate_limit"],
            evaluate_seed=opts["evaluate_seed"], created_by=user, simulated_annotators=opts["simulate_annotators"],
        )

    def _wait(self, training_round: TrainingRound, opts) -> None:
        try:
            training_round = round_watch(
                training_round=training_round, file=self.stderr._out, poll=opts["poll"], timeout=opts["timeout"],
            )
        except WatchTimeout as exc:
            raise CommandError(str(exc)) from exc
        if training_round.stage == TrainingRound.Stage.FAILED:
            raise CommandError(
                f"training round {training_round.pk} '{training_round.name}' failed while "
                f"{training_round.failed_stage}: {training_round.error}"
            )
        model = training_round.output_model
        self.stdout.write(f"training round {training_round.pk} '{training_round.name}' done: model '{model.name}'")

    def _from_collected_round(self, opts, user) -> None:
        missing = [flag for flag in ("base_model", "config", "name") if not opts[flag]]
        if missing:
            raise CommandError(f"--{missing[0].replace('_', '-')} is required with a collected ROUND")
        round_ = round_by_id_or_name(opts["round"])
        if round_ is None:
            raise CommandError(f"no round with id or name {opts['round']!r}")
        base = self._model(opts["base_model"])
        evaluate_on = self._prompt_set(opts["evaluate_on"], "--evaluate-on") if opts["evaluate_on"] else None
        try:
            config = run_settings(opts["config"], opts["overrides"], stderr=self.stderr)
            with transaction.atomic():
                launch = training_round_launch(
                    round_=round_, base_model=base, config=config, name=opts["name"], evaluate_on=evaluate_on,
                    evaluate_limit=opts["evaluate_limit"], evaluate_seed=opts["evaluate_seed"], created_by=user,
                )
        except ConfigError as exc:
            raise CommandError(f"config: {exc}{NOTHING}") from exc
        except AnnotationError as exc:
            raise CommandError(f"{exc.detail}{NOTHING}") from exc
        except TrainingRoundError as exc:
            raise CommandError(f"{refusal(exc)}{NOTHING}") from exc
        export, run = launch.export, launch.run
        self.stdout.write(
            f"dataset {export.path}: {export.pairs} pairs ({export.n_synthetic_judgments} synthetic judgments)\n"
            f"training run {run.pk} '{run.name}' queued on the gpu queue; output {run.output_dir}\n"
            + (f"then: evaluation of '{run.name}' against '{base.name}' on '{evaluate_on.name}'\n" if evaluate_on else "")
        )

    def _model(self, name: str) -> ModelVersion:
        model = ModelVersion.objects.filter(name=name).first()
        if model is None:
            raise CommandError(f"--base: no model version named {name!r}")
        return model

    def _prompt_set(self, name: str, flag: str) -> PromptSet:
        prompt_set = PromptSet.objects.filter(name=name).first()
        if prompt_set is None:
            raise CommandError(f"{flag}: no prompt set named {name!r}")
        return prompt_set

    def _training_round(self, value: str, flag: str) -> TrainingRound:
        found = training_round_by_id_or_name(value)
        if found is None:
            raise CommandError(f"{flag}: no training round with id or name {value!r}")
        return found

