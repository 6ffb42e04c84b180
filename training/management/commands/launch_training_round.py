from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from annotation.selectors import round_by_id_or_name
from annotation.services import AnnotationError
from catalog.models import ModelVersion, PromptSet
from training.engine.config import ConfigError, read_settings
from training.rounds import TrainingRoundError, training_round_launch
from training.services import RUN_DECIDED


class Command(BaseCommand):
    help = (
        "Launch a whole training round: export ROUND's winner/loser pairs, train BASE on them with "
        "pixel-augmented DPO/SimPO on a gpu worker, register the checkpoint as a new model, and "
        "(with --evaluate-on) evaluate it against BASE once it exists."
    )

    def add_arguments(self, parser):
        parser.add_argument("round", help="Annotation round (id or name): pairwise or best_worst.")
        parser.add_argument("--base-model", required=True, help="Model version to post-train.")
        parser.add_argument("--config", required=True, help="TOML or JSON training config (see training/configs/).")
        parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                            help="Override one config setting; repeatable.")
        parser.add_argument("--name", required=True, help="Name of the run and of the model it produces.")
        parser.add_argument("--evaluate-on", metavar="PROMPT_SET", help="Evaluate the new model against the base on this set.")
        parser.add_argument("--evaluate-limit", type=int, help="Evaluate on a seeded sample of this many prompts.")
        parser.add_argument("--evaluate-seed", type=int, default=0)
        parser.add_argument("--user", help="Username recorded as the creator.")

    def handle(self, *args, **opts):
        round_ = round_by_id_or_name(opts["round"])
        if round_ is None:
            raise CommandError(f"no round with id or name {opts['round']!r}")
        base = ModelVersion.objects.filter(name=opts["base_model"]).first()
        if base is None:
            raise CommandError(f"--base-model: no model version named {opts['base_model']!r}")
        evaluate_on = None
        if opts["evaluate_on"]:
            evaluate_on = PromptSet.objects.filter(name=opts["evaluate_on"]).first()
            if evaluate_on is None:
                raise CommandError(f"--evaluate-on: no prompt set named {opts['evaluate_on']!r}")
        user = None
        if opts["user"]:
            user = get_user_model().objects.filter(username=opts["user"]).first()
            if user is None:
                raise CommandError(f"--user: no user named {opts['user']!r}")
        try:
            config, ignored = read_settings(opts["config"], opts["overrides"], leave_out=RUN_DECIDED)
            if ignored:
                self.stderr.write(f"ignoring {', '.join(ignored)} from {opts['config']}: the round decides them")
            with transaction.atomic():
                launch = training_round_launch(
                    round_=round_, base_model=base, config=config, name=opts["name"], evaluate_on=evaluate_on,
                    evaluate_limit=opts["evaluate_limit"], evaluate_seed=opts["evaluate_seed"], created_by=user,
                )
        except ConfigError as exc:
            raise CommandError(f"config: {exc} (nothing was launched)") from exc
        except AnnotationError as exc:
            raise CommandError(f"{exc.detail} (nothing was launched)") from exc
        except TrainingRoundError as exc:
            raise CommandError(f"{exc} (nothing was launched)") from exc
        export, run = launch.export, launch.run
        self.stdout.write(
            f"dataset {export.path}: {export.pairs} pairs ({export.n_synthetic_judgments} synthetic judgments)\n"
            f"training run {run.pk} '{run.name}' queued on the gpu queue; output {run.output_dir}\n"
            + (f"then: evaluation of '{run.name}' against '{base.name}' on '{evaluate_on.name}'\n" if evaluate_on else "")
        )
