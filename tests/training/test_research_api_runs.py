"""The research API's training runs: create one (on a dataset or a collected round), and read its metrics series."""

import json
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from catalog.models import ModelVersion
from catalog.services import model_register
from outbox.models import OutboxMessage
from tests.factories import AnnotatorFactory, ModelVersionFactory, ResearcherFactory
from tests.training.run_builders import make_run
from training.models import TrainingRun
from training.services import TRAIN_TASK

pytestmark = pytest.mark.django_db

# The tiny pipeline trains on 32 px images for two steps.
TINY = {"resolution": 32, "train_batch_size": 2, "max_train_steps": 2, "checkpointing_steps": 2,
        "learning_rate": 1e-3, "latent_objective": "sft", "pixel_objective": "sft", "pixel_weight": 2.0}


@pytest.fixture
def researcher(research_api):
    return research_api


@pytest.fixture
def base(tiny_unet):
    return model_register(path=tiny_unet, name="base")


def create(researcher, capture, **body):
    with capture(execute=True):
        return researcher.post("/api/research/runs/", body, format="json")


def test_only_researchers_reach_runs_and_their_metrics():
    run = make_run()
    paths = [("get", "/api/research/runs/"), ("post", "/api/research/runs/"), ("get", f"/api/research/runs/{run.pk}/"),
             ("get", f"/api/research/runs/{run.pk}/metrics/")]
    annotator = APIClient()
    annotator.force_login(AnnotatorFactory())
    for method, path in paths:
        for client, expected in ((APIClient(), (401, 403)), (annotator, (403,))):
            answer = getattr(client, method)(path, {"name": "x", "base_model": run.base_model.name,
                                                    "dataset_path": "/tmp"}, format="json")
            assert answer.status_code in expected, (method, path)
            assert set(answer.json()) == {"detail", "code"}  # the refusal, never the run
    assert TrainingRun.objects.count() == 1


def test_a_run_on_a_dataset_trains_and_its_metrics_are_served(
    researcher, base, sft_folder, eager_tasks, django_capture_on_commit_callbacks
):
    answer = create(researcher, django_capture_on_commit_callbacks, name="base-sft", base_model="base",
                    dataset_path=str(sft_folder), config_file="toy_simpo_pixel.toml", config=TINY,
                    overrides=["seed=3"])
    assert answer.status_code == 202, answer.json()
    body = answer.json()
    run = TrainingRun.objects.get(name="base-sft")
    assert answer["Location"] == body["url"] == f"/api/research/runs/{run.pk}/"
    # The example file's objectives gave way to config, then to overrides; its paths were left out.
    assert (run.config["latent_objective"], run.config["resolution"], run.config["seed"]) == ("sft", 32, 3)
    assert "pretrained_model" not in run.config and run.dataset_path == str(sft_folder)

    polled = researcher.get(body["url"]).json()
    assert polled["status"] == "succeeded", polled["error"]
    assert ModelVersion.objects.get(name="base-sft").parent == base
    metrics = researcher.get(f"{body['url']}metrics/").json()
    assert metrics["source"] == "metrics.jsonl" and metrics["total"] == 2
    assert [point["step"] for point in metrics["points"]] == [1, 2] and "loss" in metrics["points"][0]
    assert metrics["next"] is None


BAD_RUNS = [
    # (change to a good body, the field at fault, code)
    ({"overrides": ["pixel_crop=2"]}, ("config", "pixel_crop"), "invalid"),
    ({"config": {**TINY, "pixel_crop": 2.0}}, ("config", "pixel_crop"), "invalid"),
    ({"config": {**TINY, "resolution": "32"}}, ("config", "resolution"), "invalid"),
    ({"config": {**TINY, "no_such_setting": 1}}, ("config", None), "invalid"),
    ({"config": {**TINY, "pretrained_model": "/elsewhere"}}, ("config", "pretrained_model"), "invalid"),
    ({"overrides": ["gpus=0"]}, ("config", "gpus"), "invalid"),
    ({"overrides": ["accelerate_config=/etc/fsdp.yaml"]}, ("config", "accelerate_config"), "invalid"),
    ({"overrides": ["seed"]}, ("config", None), "invalid"),
    ({"config": {**TINY, "lora_target_modules": ["to_q\x00"]}}, ("config", None), "invalid"),
    ({"config_file": "../../etc/passwd.toml"}, ("config_file", None), "invalid"),
    ({"dataset_path": "relative/folder"}, ("dataset_path", None), "invalid"),
    ({"dataset_path": "/no/such/dataset"}, ("dataset_path", None), "invalid"),
    ({"dataset_path": None}, ("dataset_path", None), "invalid"),
    ({"evaluate_limit": 3}, ("evaluate_limit", None), "invalid"),
    ({"base_model": "nope"}, ("base_model", None), "invalid"),
    ({"base_model": "external"}, ("base_model", None), "external_model"),
    ({"base_model": "moved"}, ("base_model", None), "invalid"),
    ({"name": "taken"}, ("name", None), "name_taken"),
    ({"name": "base"}, ("name", None), "name_taken"),  # the checkpoint would take a model's name
    ({"name": ""}, ("name", None), "invalid"),
]


@pytest.mark.parametrize(("change", "field", "code"), BAD_RUNS)
def test_a_bad_run_is_a_400_naming_the_field_and_nothing_is_queued(
    researcher, base, sft_folder, django_capture_on_commit_callbacks, change, field, code
):
    ModelVersion.objects.create(name="external", kind=ModelVersion.Kind.EXTERNAL)
    ModelVersionFactory(name="moved", local_path="/no/such/pipeline")
    make_run(name="taken", base_model=base)
    body = {"name": "new", "base_model": "base", "dataset_path": str(sft_folder), "config": TINY, **change}
    body = {key: value for key, value in body.items() if value is not None}
    answer = create(researcher, django_capture_on_commit_callbacks, **body)
    assert answer.status_code == 400, answer.json()
    error = answer.json()
    top, setting = field
    assert error["code"] == code and top in error, error
    if setting is not None:
        assert setting in error[top] and setting in error["detail"], error
    assert TrainingRun.objects.count() == 1 and not OutboxMessage.objects.filter(task_name=TRAIN_TASK).exists()


from tests.training.test_training_round import judged_round  # noqa: E402,F401  (a fixture)
from training.services import EXPORT_TASK  # noqa: E402
from training.tasks import run_round_export  # noqa: E402


def test_a_run_on_a_collected_round_exports_its_pairs_and_queues_the_run(
    researcher, judged_round, settings, tmp_path, django_capture_on_commit_callbacks
):
    from tests.factories import PromptFactory, PromptSetFactory

    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
    eval_set = PromptSetFactory(name="held-out")
    PromptFactory(prompt_set=eval_set)
    base, round_ = judged_round
    config = {**TINY, "latent_objective": "simpo", "pixel_objective": "simpo"}
    answer = create(researcher, django_capture_on_commit_callbacks, name="base-simpo", base_model="base",
                    round=round_.pk, config=config, evaluate_on="held-out", evaluate_limit=1)
    assert answer.status_code == 202, answer.json()
    run = TrainingRun.objects.get(name="base-simpo")
    # The request exports nothing: the default queue does, then sends the run on to the gpu queue.
    assert run.source_round == round_ and run.dataset_path == "" and run.phase == "exporting the round's pairs"
    assert answer.json()["phase"] == run.phase and not (tmp_path / "artifacts" / "preferences").exists()
    assert run.follow_up == {"evaluate": {"prompt_set": eval_set.pk, "limit": 1, "seed": 0}}
    assert OutboxMessage.objects.filter(task_name=EXPORT_TASK, args=[run.pk]).exists()
    assert not OutboxMessage.objects.filter(task_name=TRAIN_TASK).exists()
    with django_capture_on_commit_callbacks():
        assert run_round_export(run.pk) == "4 pairs"  # the judged round: 4 items, each a winner and a loser
    run.refresh_from_db()
    assert run.dataset_path.endswith("manifest.jsonl") and Path(run.dataset_path).is_file() and run.phase == "queued"
    assert OutboxMessage.objects.filter(task_name=TRAIN_TASK, args=[run.pk]).exists()
    assert run_round_export(run.pk) == "skipped"  # a re-delivered task exports nothing again

    sft = create(researcher, django_capture_on_commit_callbacks, name="base-sft", base_model="base",
                 round=round_.pk, config=TINY)
    assert sft.status_code == 400 and "config" in sft.json() and "dpo or simpo" in sft.json()["detail"]
    both = create(researcher, django_capture_on_commit_callbacks, name="x", base_model="base", round=round_.pk,
                  dataset_path=str(tmp_path), config=config)
    assert both.status_code == 400 and "dataset_path" in both.json()
    missing = create(researcher, django_capture_on_commit_callbacks, name="x", base_model="base", round=10**6,
                     config=config)
    assert missing.status_code == 400 and "round" in missing.json()


@pytest.mark.parametrize("kind, code", [("pairwise", "no_pairs"), ("alignment", "invalid")])
def test_a_round_without_pairs_is_refused_by_name(kind, code):
    from tests.annotation.builders import alignment_round, pairwise_round

    round_ = pairwise_round(n_items=2, k=3) if kind == "pairwise" else alignment_round(n_items=2, k=3)
    client = APIClient()
    client.force_login(ResearcherFactory())
    base = ModelVersionFactory(name="b")
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp())
    (folder / "model_index.json").write_text("{}")
    ModelVersion.objects.filter(pk=base.pk).update(local_path=str(folder))
    answer = client.post("/api/research/runs/", {"name": "n", "base_model": "b", "round": round_.pk,
                                                 "config": {**TINY, "latent_objective": "dpo"}}, format="json")
    assert answer.status_code == 400 and answer.json()["code"] == code and "round" in answer.json()
    assert not TrainingRun.objects.exists()


def test_metrics_come_from_the_record_without_a_run_folder_thinned_or_paged(researcher):
    run = make_run(n_points=300)  # steps 10, 20, … 3000
    url = f"/api/research/runs/{run.pk}/metrics/"
    whole = researcher.get(url, {"limit": 2000}).json()
    assert whole["source"] == "history" and whole["total"] == 300 and whole["points"] == run.history

    every = researcher.get(url, {"every": 10}).json()
    assert [p["step"] for p in every["points"]] == list(range(10, 3001, 100))
    thinned = researcher.get(url, {"points": 50}).json()["points"]
    assert len(thinned) == 50 and thinned[0]["step"] == 10 and thinned[-1]["step"] == 3000

    pages, next_url = [], f"{url}?limit=120&every=2"
    while next_url:
        page = researcher.get(next_url).json()
        pages.append(page["points"])
        next_url = page["next"]
    assert [len(p) for p in pages] == [120, 30]
    assert [p for page in pages for p in page] == run.history[::2]

    for bad, field in (({"every": 0}, "every"), ({"points": 1}, "points"), ({"limit": 0}, "limit"),
                       ({"every": 2, "points": 10}, "points"), ({"after_step": "x"}, "after_step")):
        refused = researcher.get(url, bad)
        assert refused.status_code == 400 and field in refused.json(), bad
    assert researcher.get("/api/research/runs/999999/metrics/").status_code == 404


def test_metrics_come_from_the_run_folder_when_it_is_readable(researcher, tmp_path):
    run = make_run(n_points=10, output_dir=str(tmp_path))  # the record has 10 thinned points, the file 2,000
    lines = [json.dumps({"step": step, "loss": 1 / step}) for step in range(1, 2001)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    answer = researcher.get(f"/api/research/runs/{run.pk}/metrics/", {"after_step": 1500}).json()
    assert answer["source"] == "metrics.jsonl" and answer["total"] == 2000
    assert [p["step"] for p in answer["points"]] == list(range(1501, 2001)) and answer["next"] is None


def test_a_run_cancelled_before_its_export_exports_on_resume_and_one_whose_pairs_went_fails(
    researcher, judged_round, settings, tmp_path, django_capture_on_commit_callbacks
):
    from annotation.models import Judgment
    from training.services import training_run_cancel, training_run_resume

    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
    base, round_ = judged_round
    config = {**TINY, "latent_objective": "dpo"}
    answer = create(researcher, django_capture_on_commit_callbacks, name="early", base_model="base", round=round_.pk,
                    config=config)
    run = TrainingRun.objects.get(pk=answer.json()["id"])
    training_run_cancel(run=run)
    assert run_round_export(run.pk) == "skipped"  # cancelled while queued: nothing exported
    with django_capture_on_commit_callbacks():
        training_run_resume(run=run)
    assert OutboxMessage.objects.filter(task_name=EXPORT_TASK, args=[run.pk]).count() == 2
    assert not OutboxMessage.objects.filter(task_name=TRAIN_TASK).exists()

    # The pairs are gone by the time the task runs (the judgments were removed; the export recomputes the
    # aggregates from them): the run fails, saying why, and is not sent to the gpu queue.
    Judgment.objects.filter(item__round=round_).delete()
    assert run_round_export(run.pk) == "no pairs"
    run.refresh_from_db()
    assert run.status == "failed" and "no winner/loser pair" in run.error and run.finished_at is not None
    assert not OutboxMessage.objects.filter(task_name=TRAIN_TASK).exists()
