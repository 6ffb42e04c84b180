"""The research API's training rounds: start one, follow its stages and what each made, iterate on it."""

import pytest
from rest_framework.test import APIClient

from catalog.models import GenerationJob
from evaluation.models import EvaluationRound
from outbox.models import OutboxMessage
from tests.factories import AnnotatorFactory, ModelVersionFactory, PromptSetFactory
from tests.training.test_whole_round import advance, annotate, eager, world  # noqa: F401  (fixtures)
from training.models import TrainingRound

pytestmark = pytest.mark.django_db

SIMPO = {"resolution": 32, "train_batch_size": 2, "max_train_steps": 2, "checkpointing_steps": 2,
         "learning_rate": 1e-3, "latent_beta": 100.0, "pixel_beta": 100.0}


@pytest.fixture
def researcher(research_api):
    return research_api


def start(researcher, capture, **change):
    body = {"name": "r1", "base_model": "base", "prompt_set": "train-prompts", "method": "simpo", "pixel_weight": 2,
            "config": SIMPO, "evaluate_on": "eval-prompts", **change}
    with capture(execute=True):
        return researcher.post("/api/research/training-rounds/", body, format="json")


def test_only_researchers_reach_training_rounds():
    base = ModelVersionFactory()
    training_round = TrainingRound.objects.create(
        name="r", base_model=base, prompt_set=PromptSetFactory(), evaluate_on=PromptSetFactory(), method="simpo",
        pixel_weight=1.0)
    annotator = APIClient()
    annotator.force_login(AnnotatorFactory())
    for method, path in (("get", "/api/research/training-rounds/"), ("post", "/api/research/training-rounds/"),
                         ("get", f"/api/research/training-rounds/{training_round.pk}/"),
                         ("post", f"/api/research/training-rounds/{training_round.pk}/iterate/")):
        for client, expected in ((APIClient(), (401, 403)), (annotator, (403,))):
            answer = getattr(client, method)(path, {}, format="json")
            assert answer.status_code in expected and set(answer.json()) == {"detail", "code"}, (method, path)
    assert TrainingRound.objects.count() == 1


def test_a_round_started_through_the_api_runs_to_a_new_model_and_iterates(
    researcher, world, eager, django_capture_on_commit_callbacks
):
    answer = start(researcher, django_capture_on_commit_callbacks)
    assert answer.status_code == 202, answer.json()
    body = answer.json()
    training_round = TrainingRound.objects.get(name="r1")
    assert answer["Location"] == body["url"] == f"/api/research/training-rounds/{training_round.pk}/"
    assert (body["stage"], body["method"], body["prompts"], body["images_per_prompt"]) == ("generating", "simpo", 3, 5)
    # The method's objectives went over config; the images are queued (then made by the eager gpu task).
    assert (training_round.config["latent_objective"], training_round.config["pixel_weight"]) == ("simpo", 2.0)
    assert body["progress"] == {"stage": "generating", "what": "images generated", "done": 0, "total": 15}
    assert researcher.get(body["url"]).json()["progress"]["done"] == 15

    training_round = advance(training_round, django_capture_on_commit_callbacks)
    annotating = researcher.get(body["url"]).json()
    assert annotating["stage"] == "annotating" and annotating["annotation_round"] == training_round.annotation_round_id
    assert annotating["progress"] == {"stage": "annotating", "what": "items complete", "done": 0, "total": 3}

    annotate(training_round)
    advance(training_round, django_capture_on_commit_callbacks)  # export, train, register
    training_round = advance(training_round, django_capture_on_commit_callbacks)  # the evaluation's images
    done = researcher.get(body["url"]).json()
    run = training_round.training_run
    assert done["stage"] == "done" and done["progress"] is None
    assert (done["training_run"], done["output_model"], done["output_model_id"]) == (run.pk, "r1", run.output_model_id)
    assert done["pairs"] == 3 and done["dataset_path"] == run.dataset_path
    assert done["evaluation_batch"] == training_round.evaluation_batch_id is not None
    # The round's evaluation, found by its batch.
    evaluations = researcher.get("/api/research/evaluations/", {"batch": done["evaluation_batch"]}).json()
    assert [row["id"] for row in evaluations["results"]] == [EvaluationRound.objects.get().pk]
    listed = researcher.get("/api/research/training-rounds/").json()["results"]
    assert [row["name"] for row in listed] == ["r1"] and listed[0]["stage"] == "done"

    with django_capture_on_commit_callbacks(execute=True):
        following = researcher.post(f"{body['url']}iterate/", {}, format="json")
    assert following.status_code == 202, following.json()
    nxt = following.json()
    assert (nxt["previous"], nxt["base_model"], nxt["name"], nxt["stage"]) == (
        training_round.pk, "r1", "base-simpo-r2", "generating")
    assert following["Location"] == nxt["url"]
    early = researcher.post(f"{nxt['url']}iterate/", {}, format="json")
    assert early.status_code == 400 and early.json()["code"] == "no_model_yet"
    assert TrainingRound.objects.count() == 2


BAD_ROUNDS = [
    ({"method": "ppo"}, "method", "invalid"),
    ({"pixel_weight": -1}, "pixel_weight", "invalid"),
    ({"images_per_prompt": 2}, "images_per_prompt", "invalid"),
    ({"k": 0}, "k", "invalid"),
    ({"limit": 0}, "limit", "invalid"),
    ({"evaluate_limit": 0}, "evaluate_limit", "invalid"),
    ({"simulated_annotators": "bogus"}, "simulated_annotators", "invalid"),
    ({"config": {**SIMPO, "pixel_crop": 2.0}}, "config", "invalid"),
    ({"overrides": ["latent_objective=sft", "pixel_objective=sft"]}, "config", "invalid"),  # simpo needs a pair term
    ({"method": "sft", "overrides": ["latent_objective=dpo"]}, "config", "invalid"),
    ({"name": "base"}, "name", "name_taken"),
    ({"name": "x" * 181}, "name", "invalid"),
    ({"prompt_set": "empty"}, "prompt_set", "invalid"),
    ({"prompt_set": "nope"}, "prompt_set", "invalid"),
    ({"base_model": "moved"}, "base_model", "invalid"),
    ({"seed": 2**64}, "seed", "invalid"),
]


@pytest.mark.parametrize(("change", "field", "code"), BAD_ROUNDS)
def test_a_bad_round_is_a_400_naming_the_field_and_nothing_is_made(
    researcher, world, django_capture_on_commit_callbacks, change, field, code
):
    PromptSetFactory(name="empty")
    ModelVersionFactory(name="moved", local_path="/no/such/pipeline")
    answer = start(researcher, django_capture_on_commit_callbacks, **change)
    assert answer.status_code == 400, answer.json()
    assert answer.json()["code"] == code and field in answer.json(), answer.json()
    assert "--" not in answer.json()["detail"], "an API refusal speaks of fields, not of the command's flags"
    assert not TrainingRound.objects.exists() and not GenerationJob.objects.exists()
    assert not OutboxMessage.objects.exists()


def test_a_bad_setting_is_named_under_config(researcher, world, django_capture_on_commit_callbacks):
    answer = start(researcher, django_capture_on_commit_callbacks, overrides=["pixel_crop=2"]).json()
    assert list(answer["config"]) == ["pixel_crop"] and answer["detail"].startswith("config: pixel_crop:")
