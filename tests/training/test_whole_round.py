"""A whole training round from a base model and a prompt set: images, best/worst round, pairs, run, model, evaluation."""

from types import SimpleNamespace

import pytest
from django.core.management import CommandError, call_command
from PIL import Image as PILImage

from annotation.models import Round
from catalog.generation import pool_generation_create
from catalog.models import GenerationJob, ModelVersion, Prompt
from catalog.services import model_register
from evaluation.models import EvaluationRound
from outbox.models import OutboxMessage
from tests.factories import PromptFactory, PromptSetFactory, ResearcherFactory
from toyworld.prompts import prompt_rows
from training.models import TrainingRound, TrainingRun
from training.rounds import training_round_advance, training_rounds_advance
from training.services import TRAIN_TASK, training_run_fail

from tests.training.test_training_round import CONFIG  # the objectives in it give way to --method

pytestmark = pytest.mark.django_db



@pytest.fixture
def world(tiny_unet, tmp_path):
    base = model_register(path=tiny_unet, name="base")
    train = PromptSetFactory(name="train-prompts")
    for row in prompt_rows("train", 3):  # toy-world captions, so the oracle annotators can judge the images
        PromptFactory(prompt_set=train, external_id=row["id"], text=row["prompt"])
    held_out = PromptSetFactory(name="eval-prompts")
    for _ in range(2):
        PromptFactory(prompt_set=held_out)
    config = tmp_path / "round.toml"
    config.write_text(CONFIG)
    return SimpleNamespace(base=base, config=str(config))


@pytest.fixture
def eager(eager_tasks, settings):
    """Tasks run inline; images at 64 px, the size the toy world's oracle reads."""
    settings.EVALUATION_SAMPLER = {"steps": 2, "batch_size": 8, "height": 64, "width": 64}


def launch(world, *extra, name="r1"):
    call_command(
        "launch_training_round", "--base", "base", "--prompts", "train-prompts", "--method", "simpo",
        "--pixel-weight", "2", "--config", world.config, "--evaluate-on", "eval-prompts", "--name", name, *extra,
    )
    return TrainingRound.objects.get(name=name)


def advance(training_round, capture) -> TrainingRound:
    with capture(execute=True):
        return training_round_advance(round_id=training_round.pk)


def annotate(training_round) -> None:
    call_command("simulate_annotators", training_round.annotation_round.name, "--annotators", "5",
                 "--policy", "noisy_oracle", "--noise", "0", verbosity=0)


@pytest.fixture
def done_round(world, eager, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        training_round = launch(world)
    training_round = advance(training_round, django_capture_on_commit_callbacks)
    annotate(training_round)
    training_round = advance(training_round, django_capture_on_commit_callbacks)  # export, train, register, evaluate
    return advance(training_round, django_capture_on_commit_callbacks)


def test_a_round_goes_from_base_model_to_an_evaluated_new_model(
    world, eager, django_capture_on_commit_callbacks, capsys
):
    with django_capture_on_commit_callbacks(execute=True):
        training_round = launch(world)
    out = capsys.readouterr().out
    assert "5 images for each of 3 prompts" in out
    assert f"/admin/training/traininground/{training_round.pk}/change/" in out and "--watch" in out
    assert training_round.stage == TrainingRound.Stage.GENERATING
    assert GenerationJob.objects.filter(model_version=world.base, status=GenerationJob.Status.DONE).count() == 15

    training_round = advance(training_round, django_capture_on_commit_callbacks)
    assert training_round.stage == TrainingRound.Stage.ANNOTATING
    best_worst = training_round.annotation_round
    assert best_worst.kind == Round.Kind.BEST_WORST and best_worst.k == 5
    assert best_worst.items.count() == 3 and all(item.images.count() == 5 for item in best_worst.items.all())

    annotate(training_round)
    training_round = advance(training_round, django_capture_on_commit_callbacks)
    run = training_round.training_run
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert run.source_round == best_worst and run.dataset_path == training_round.dataset_path
    assert training_round.pairs == 3 and training_round.dataset_path.endswith("manifest.jsonl")
    assert (run.config["latent_objective"], run.config["pixel_objective"], run.config["pixel_weight"]) == (
        "simpo", "simpo", 2.0)
    model = ModelVersion.objects.get(name="r1")
    assert model.parent == world.base and model.produced_by == run

    training_round = advance(training_round, django_capture_on_commit_callbacks)
    assert training_round.stage == TrainingRound.Stage.DONE and training_round.finished_at is not None
    assert training_round.output_model == model
    evaluation = EvaluationRound.objects.get()
    assert evaluation.ordered_models() == [model, world.base] and evaluation.prompt_set.name == "eval-prompts"
    assert training_round.evaluation_batch == evaluation.generation_batch
    assert evaluation.annotation_rounds.filter(kind="pairwise").count() == 2


def test_a_finished_stage_is_not_redone(world, eager, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        training_round = launch(world)
    for _ in range(2):
        training_round = advance(training_round, django_capture_on_commit_callbacks)
    assert Round.objects.count() == 1 and training_round.stage == TrainingRound.Stage.ANNOTATING

    annotate(training_round)
    with django_capture_on_commit_callbacks(execute=False):  # the run stays queued: no worker took it yet
        for _ in range(2):
            training_round = training_round_advance(round_id=training_round.pk)
        assert training_rounds_advance() == []  # beat's task: nothing moved
    assert training_round.stage == TrainingRound.Stage.TRAINING
    assert TrainingRun.objects.count() == 1
    assert OutboxMessage.objects.filter(task_name=TRAIN_TASK).count() == 1


def test_a_failed_training_run_fails_the_round_with_its_reason(world, eager, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        training_round = launch(world)
    training_round = advance(training_round, django_capture_on_commit_callbacks)
    annotate(training_round)
    with django_capture_on_commit_callbacks(execute=False):
        training_round = training_round_advance(round_id=training_round.pk)
    training_run_fail(training_round.training_run, RuntimeError("CUDA out of memory"))  # what the gpu worker records

    training_round = training_round_advance(round_id=training_round.pk)
    assert training_round.stage == TrainingRound.Stage.FAILED
    assert training_round.failed_stage == TrainingRound.Stage.TRAINING
    assert "failed: RuntimeError: CUDA out of memory" in training_round.error
    assert training_round_advance(round_id=training_round.pk).stage == TrainingRound.Stage.FAILED  # stays failed

    with pytest.raises(CommandError) as refused:
        call_command("launch_training_round", "--watch", "r1", "--poll", "0")
    message = str(refused.value)
    assert "\n" not in message and "failed while training" in message and "CUDA out of memory" in message


def test_wait_exits_non_zero_when_the_images_fail(world, eager):
    # The same request failed on the worker before: its jobs are reused, so this round's images fail.
    prompts = list(Prompt.objects.filter(prompt_set__name="train-prompts"))
    pool_generation_create(model_version=world.base, prompts=prompts, images_per_prompt=5, seed=0)
    GenerationJob.objects.update(status=GenerationJob.Status.FAILED, error="CUDA error: out of memory")
    with pytest.raises(CommandError) as refused:
        launch(world, "--wait", "--poll", "0")
    message = str(refused.value)
    assert "\n" not in message and "failed while generating" in message and "CUDA error: out of memory" in message
    assert TrainingRound.objects.get().stage == TrainingRound.Stage.FAILED


def test_wait_gives_up_at_its_timeout_and_the_round_goes_on(world):
    with pytest.raises(CommandError, match=r"stopped waiting on round \d+ 'r1' \(generating\)"):
        launch(world, "--wait", "--poll", "0.01", "--timeout", "0.05")
    assert TrainingRound.objects.get().stage == TrainingRound.Stage.GENERATING


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"--base": "nope"}, "--base: no model version named 'nope'"),
        ({"--prompts": "nope"}, "--prompts: no prompt set named 'nope'"),
        ({"--evaluate-on": "nope"}, "--evaluate-on: no prompt set named 'nope'"),
        ({"--method": "ppo"}, "argument --method: invalid choice: 'ppo'"),
        ({"--pixel-weight": "-1"}, "--pixel-weight: must be 0 or more"),
        ({"--images-per-prompt": "1"}, "--images-per-prompt: a best/worst item needs at least 3 images"),
        ({"--set": "pixel_crop=2.0"}, "config: pixel_crop"),
        ({"--set": "no_such_setting=1"}, "config: no_such_setting: unknown setting"),
        ({"--set": "output_dir=/tmp/x"}, "config: output_dir: is set by the training run"),
        ({"--config": "missing.toml"}, "config: missing.toml: cannot read config file"),
    ],
)
def test_bad_input_prints_one_line_and_creates_nothing(world, change, expected):
    args = {"--base": "base", "--prompts": "train-prompts", "--method": "simpo", "--config": world.config,
            "--name": "r1", **change}
    with pytest.raises(CommandError) as refused:
        call_command("launch_training_round", *[part for pair in args.items() for part in pair])
    message = str(refused.value)
    assert expected in message and "\n" not in message
    assert not TrainingRound.objects.exists() and not GenerationJob.objects.exists()
    assert not Round.objects.exists() and not TrainingRun.objects.exists()


def test_pixel_weight_zero_trains_the_latent_term_alone_and_set_can_drop_it(world):
    launch(world, "--pixel-weight", "0", name="latent")
    assert TrainingRound.objects.get(name="latent").config["pixel_objective"] == "none"
    call_command("launch_training_round", "--base", "base", "--prompts", "train-prompts", "--method", "dpo",
                 "--config", world.config, "--set", "latent_objective=none", "--name", "pixel")
    pixel_only = TrainingRound.objects.get(name="pixel")
    assert (pixel_only.config["latent_objective"], pixel_only.config["pixel_objective"]) == ("none", "dpo")
    assert pixel_only.evaluate_on.name == "train-prompts"  # no --evaluate-on: the training prompts


def test_iterate_starts_the_next_round_on_the_new_model(done_round, django_capture_on_commit_callbacks, capsys):
    with django_capture_on_commit_callbacks(execute=True):
        call_command("launch_training_round", "--iterate", "r1")
    following = TrainingRound.objects.get(previous=done_round)
    assert following.base_model == done_round.output_model and following.name == "base-simpo-r2"
    assert following.config == done_round.config and following.prompt_ids == done_round.prompt_ids
    assert following.evaluate_on == done_round.evaluate_on and following.method == "simpo"
    assert GenerationJob.objects.filter(model_version=following.base_model, batch=None).count() == 15

    with pytest.raises(CommandError, match="has made no model to iterate on yet"):
        call_command("launch_training_round", "--iterate", "base-simpo-r2")
    with pytest.raises(CommandError, match="--prompts: --iterate takes every setting"):
        call_command("launch_training_round", "--iterate", "r1", "--prompts", "train-prompts")


def test_researchers_iterate_from_the_admin(done_round, client):
    client.force_login(ResearcherFactory())
    listing = client.get("/admin/training/traininground/")
    assert listing.status_code == 200 and b"r1" in listing.content
    page = client.get(f"/admin/training/traininground/{done_round.pk}/change/")
    assert page.status_code == 200 and b"best and worst" in page.content
    response = client.post("/admin/training/traininground/", {"action": "iterate", "_selected_action": [done_round.pk]})
    assert response.status_code == 302
    following = TrainingRound.objects.get(previous=done_round)
    assert following.base_model == done_round.output_model


SFT = ("--set", "latent_objective=sft", "--set", "pixel_objective=sft")


def _sft_folder(path):
    path.mkdir()
    lines = []
    for n in range(2):
        PILImage.new("RGB", (32, 32), (40 * n, 100, 200)).save(path / f"{n}.png")
        lines.append(f'{{"file_name": "{n}.png", "text": "a picture {n}"}}')
    (path / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.django_db(transaction=True)
def test_train_trains_and_registers_without_a_round(tiny_unet, eager_tasks, tmp_path, capsys):
    model_register(path=tiny_unet, name="base")
    config = tmp_path / "sft.toml"
    config.write_text(CONFIG)
    call_command("train", "--base", "base", "--data", str(_sft_folder(tmp_path / "sft")), "--config", str(config),
                 *SFT, "--set", "seed=3", "--name", "base-sft", "--wait", "--poll", "0")
    run = TrainingRun.objects.get(name="base-sft")
    assert run.status == TrainingRun.Status.SUCCEEDED and run.config["seed"] == 3
    assert ModelVersion.objects.get(name="base-sft").parent.name == "base"
    assert "succeeded: model 'base-sft'" in capsys.readouterr().out


@pytest.mark.django_db(transaction=True)
def test_train_wait_exits_non_zero_when_the_run_fails(tiny_unet, eager_tasks, tmp_path, settings):
    from config.celery import app

    app.conf.task_eager_propagates = False  # as on a worker: the failure stays in the run, not in this process
    settings.TRAINING_MIN_FREE_BYTES = 10**18
    model_register(path=tiny_unet, name="base")
    config = tmp_path / "sft.toml"
    config.write_text(CONFIG)
    with pytest.raises(CommandError) as refused:
        call_command("train", "--base", "base", "--data", str(_sft_folder(tmp_path / "sft")), "--config", str(config),
                     *SFT, "--name", "base-sft", "--wait", "--poll", "0")
    message = str(refused.value)
    assert "\n" not in message and "'base-sft' failed: out of disk" in message
    assert not ModelVersion.objects.filter(name="base-sft").exists()


def test_train_refuses_bad_input_in_one_line(world, tmp_path):
    data = str(_sft_folder(tmp_path / "sft"))
    cases = [
        (["--base", "nope", "--data", data, "--config", world.config], "--base: no model version named 'nope'"),
        (["--base", "base", "--data", str(tmp_path / "gone"), "--config", world.config], "--data: "),
        (["--base", "base", "--data", data, "--config", world.config, "--set", "pixel_crop=2"], "config: pixel_crop"),
    ]
    for args, expected in cases:
        with pytest.raises(CommandError) as refused:
            call_command("train", *args, "--name", "x")
        assert expected in str(refused.value) and "\n" not in str(refused.value)
    assert not TrainingRun.objects.exists()


def test_sft_rounds_train_on_the_best_images_of_the_export(tmp_path, settings):
    from training.engine.data import load_sft_dataset
    from training.rounds import winners_folder

    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
    export = tmp_path / "artifacts" / "preferences" / "round-1-abc"
    (export / "images").mkdir(parents=True)
    for name, colour in (("w", (250, 0, 0)), ("l", (0, 0, 250))):
        PILImage.new("RGB", (32, 32), colour).save(export / "images" / f"{name}.png")
    (export / "manifest.jsonl").write_text(
        '{"caption": "a red square", "winner": "images/w.png", "loser": "images/l.png", "margin": 1.0}\n')

    folder = winners_folder(export / "manifest.jsonl")
    dataset = load_sft_dataset(folder, resolution=32)
    assert len(dataset) == 1 and dataset.fields(0)["caption"] == "a red square"
    assert PILImage.open(dataset.examples[0]["path"]).getpixel((0, 0)) == (250, 0, 0)  # the winner, not the loser
    assert winners_folder(export / "manifest.jsonl") == folder  # written once


def test_simulated_annotators_judge_the_round_as_soon_as_it_opens(world, eager, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        training_round = launch(world, "--simulate-annotators", "noisy_oracle", "--k", "3")
    assert training_round.simulated_annotators == "noisy_oracle"
    training_round = advance(training_round, django_capture_on_commit_callbacks)  # images → round → judged → trained
    best_worst = training_round.annotation_round
    assert best_worst.judgments.count() == 3 * 3
    assert set(best_worst.judgments.values_list("annotator__username", flat=True)) == {
        "synthetic-001", "synthetic-002", "synthetic-003"}
    assert training_round.stage == TrainingRound.Stage.TRAINING  # the run trained as the transition committed
    run = training_round.training_run
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    training_round = advance(training_round, django_capture_on_commit_callbacks)
    assert training_round.stage in (TrainingRound.Stage.EVALUATING, TrainingRound.Stage.DONE)


def test_a_bad_simulation_policy_is_refused_in_one_line(world):
    with pytest.raises(CommandError, match="--simulate-annotators: must be random, prefer_model:NAME or noisy_oracle"):
        launch(world, "--simulate-annotators", "everyone-agrees")
    assert not TrainingRound.objects.exists()
