"""Schemathesis against the served OpenAPI schema, in process: a researcher with a token, an annotator with a session.

Every operation of the schema is called with generated requests, valid and invalid, on seeded rounds of each
kind; path ids and leases are drawn from the real rows as often as not. Each response must not be a 5xx and
must match the schema: a documented status code, its content type, its body. Derandomized, so a run is the
same run every time; the figures are in docs/security.md.
"""

from __future__ import annotations

import uuid

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from django.middleware.csrf import _get_new_csrf_string
from django.test import Client
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance, status_code_conformance

from annotation.models import Item, Lease
from annotation.services import assignment, submission
from catalog.models import Image, ImportJob, ModelVersion, PromptSet
from config.wsgi import application
from evaluation.services import evaluation_start, report_refresh
from tests.annotation.builders import alignment_round, annotators, answer_for, best_worst_round, pairwise_round
from tests.evaluation.builders import prompt_set_with_images
from tests.factories import ModelVersionFactory, ResearcherFactory
from training.models import TrainingRound, TrainingRun

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

# Examples per operation (positive and negative together): all 20 operations in about two and a half minutes on 2 cores.
FUZZ = settings(
    max_examples=80, derandomize=True, database=None, deadline=None, phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


class World:
    """Rounds of each kind, a researcher's token, an annotator's session with leases held and judgments made."""

    def __init__(self):
        self.rounds = [pairwise_round(n_items=4, k=3), best_worst_round(n_items=3, k=3), alignment_round(n_items=3, k=3)]
        self.token = Token.objects.create(user=ResearcherFactory()).key
        (self.annotator,) = annotators(1)
        self.submissions = []  # valid bodies for POST /api/annotate/submit/, one per held lease
        self.judgments = []
        for round_ in self.rounds:
            done = assignment.item_next_for_annotator(round_=round_, annotator=self.annotator)
            result = submission.judgment_submit(
                annotator=self.annotator, lease_id=done.lease.id, client_uuid=uuid.uuid4(),
                answer=answer_for(done), elapsed_ms=900,
            )
            self.judgments.append(str(result.judgment.client_uuid))
            held = assignment.item_next_for_annotator(round_=round_, annotator=self.annotator)
            self.submissions.append({
                "client_uuid": str(uuid.uuid4()), "lease": str(held.lease.id), "elapsed_ms": 1200,
                "answer": answer_for(held),
            })
        self.round_ids = [r.pk for r in self.rounds]
        base = ModelVersionFactory()
        self.run_ids = [
            TrainingRun.objects.create(
                name=f"fuzz-{status}", base_model=base, dataset_path="pairs.jsonl", status=status,
                history=[{"step": 10 * n, "loss": 1 / n} for n in range(1, 40)],
            ).pk
            for status in TrainingRun.Status.values
        ]
        # Training rounds at each stage (a done one has a model to iterate on), and evaluations with and without
        # a stored report.
        prompt_set, versions, _ = prompt_set_with_images(models=["fuzz-a", "fuzz-b"], n_prompts=3, set_name="fuzz")
        done = TrainingRun.objects.create(name="fuzz-round-run", base_model=base, dataset_path="pairs.jsonl",
                                          status=TrainingRun.Status.SUCCEEDED, output_model=versions[0])
        self.training_round_ids = [
            TrainingRound.objects.create(
                name=f"fuzz-{stage}", base_model=base, prompt_set=prompt_set, evaluate_on=prompt_set, method="simpo",
                pixel_weight=1.0, stage=stage, training_run=done if stage == TrainingRound.Stage.DONE else None,
            ).pk
            for stage in TrainingRound.Stage.values
        ]
        evaluations = [
            evaluation_start(model_versions=versions, prompt_set=prompt_set, from_existing=True, name=f"fuzz-{n}",
                             criteria=criteria).evaluation
            for n, criteria in enumerate((["visual_flaws"], ["visual_appeal", "text_alignment"]))
        ]
        report_refresh(evaluation=evaluations[0])
        self.evaluation_ids = [e.pk for e in evaluations]
        self.item_ids = list(Item.objects.order_by("id").values_list("id", flat=True))
        # Catalog resources: a child model (lineage, produced by a run), an external one, prompt sets, images.
        child = ModelVersionFactory(parent=base)
        TrainingRun.objects.filter(pk=self.run_ids[0]).update(output_model=child)
        external = ModelVersion.objects.create(name="fuzz-external", kind=ModelVersion.Kind.EXTERNAL)
        self.model_ids = [base.pk, child.pk, external.pk]
        self.prompt_set_ids = list(PromptSet.objects.values_list("id", flat=True))
        self.import_ids = [
            ImportJob.objects.create(kind=kind, upload_name="fuzz.jsonl", status=status, result=result, error=error).pk
            for kind, status, result, error in (
                ("prompts", "queued", None, None),
                ("prompts", "succeeded", {"prompt_set": "fuzz", "created": 1}, None),
                ("images", "failed", None, {"detail": "m.jsonl:1: field 'model': no model", "code": "invalid",
                                            "field": "archive", "line": 1, "file_field": "model"}),
            )
        ]
        self.generations = [
            {"model": model.name, "prompt_set": name, "images_per_prompt": 2, "seed": 1, "limit": 2}
            for model in (base, external) for name in PromptSet.objects.values_list("name", flat=True)[:2]
        ]
        self.image_filters = [
            {"model": model, "prompt_set": prompt_set, "seed": seed}
            for model, prompt_set, seed in Image.objects.values_list("model_version__name", "prompt__prompt_set__name", "seed")[:5]
        ]
        self.leases = [str(pk) for pk in Lease.objects.values_list("id", flat=True)]
        browser = Client()
        browser.force_login(self.annotator)
        self.csrf = _get_new_csrf_string()
        self.cookies = {"sessionid": browser.cookies["sessionid"].value, "csrftoken": self.csrf}


@pytest.fixture
def world(postgres, settings, tmp_path):
    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"  # POST .../export/ writes there
    # The app is called as a WSGI app, not through Django's test client: keep the test's connection (and its
    # transaction) open across requests, as the test client does.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield World()
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


def _schema(world: World):
    schema = schemathesis.openapi.from_wsgi(
        "/api/schema/", application, headers={"Authorization": f"Token {world.token}"}
    )

    @schema.hook
    def flatmap_path_parameters(context, path_parameters):
        # As often as not, an id that exists: the round or item behind it is then really read and written.
        for name in ("id", "round_id"):
            if isinstance(path_parameters, dict) and name in path_parameters:
                path = context.operation.path
                real = next((ids for prefix, ids in world_ids(world) if path.startswith(prefix)), world.round_ids)
                return st.one_of(st.just(path_parameters), st.sampled_from(real).map(lambda pk: {**path_parameters, name: pk}))
        return st.just(path_parameters)

    @schema.hook
    def flatmap_body(context, body):
        path = context.operation.path
        if path == "/api/annotate/submit/":
            return st.one_of(st.just(body), st.sampled_from(world.submissions), _with(body, "lease", world.leases))
        if path == "/api/annotate/undo/":
            return st.one_of(st.just(body), st.sampled_from(world.judgments).map(lambda j: {"judgment": j}))
        if path == "/api/research/generations/":
            return st.one_of(st.just(body), st.sampled_from(world.generations))
        if path.endswith("/next/"):
            return st.one_of(st.just(body), st.lists(st.sampled_from(world.leases), max_size=3).map(
                lambda leases: {"exclude": leases}))
        if path in VALID_BODIES:  # a body that names real rows goes past the lookups to the services' own checks
            valid = VALID_BODIES[path]
            return st.one_of(st.just(body), st.just(valid), st.just({**valid, **body} if isinstance(body, dict) else body))
        return st.just(body)

    @schema.hook
    def flatmap_query(context, query):
        # Filters and generation requests that name real rows, as often as not.
        path = context.operation.path
        if path == "/api/research/generations/progress/":
            return st.one_of(st.just(query), st.sampled_from(world.generations))
        if path == "/api/research/images/":
            return st.one_of(st.just(query), st.sampled_from(world.image_filters))
        return st.just(query)

    return schema


VALID_BODIES = {
    "/api/research/runs/": {"name": "fuzz-new", "base_model": "fuzz-a", "dataset_path": "/", "config": {}},
    "/api/research/training-rounds/": {"base_model": "fuzz-a", "prompt_set": "fuzz", "method": "simpo"},
    "/api/research/evaluations/": {"models": ["fuzz-a", "fuzz-b"], "prompt_set": "fuzz", "from_existing": True},
}


def world_ids(world: World):
    """(path prefix, the ids of real rows behind it) for each resource with ids in its paths."""
    return [
        ("/api/research/items/", world.item_ids), ("/api/research/runs/", world.run_ids),
        ("/api/research/training-rounds/", world.training_round_ids),
        ("/api/research/evaluations/", world.evaluation_ids),
        ("/api/research/models/", world.model_ids), ("/api/research/prompt-sets/", world.prompt_set_ids),
        ("/api/research/imports/", world.import_ids),
    ]


def _with(body, field, values):
    """The generated body with ``field`` set to a real value, when the body is an object."""
    if not isinstance(body, dict):
        return st.just(body)
    return st.sampled_from(values).map(lambda value: {**body, field: value})


def _operations():
    """(method, path, tag) of every operation in the schema, read from the same generator the schema view uses."""
    paths = SchemaGenerator().get_schema(request=None, public=True)["paths"]
    return [
        pytest.param(method.upper(), path, op["tags"][0], id=f"{method.upper()} {path}")
        for path, ops in paths.items() for method, op in ops.items()
    ]


@pytest.mark.parametrize("method, path, tag", _operations())
def test_each_operation_answers_as_its_schema_says(world, method, path, tag):
    schema = _schema(world)
    operation = schema[path][method]
    strategy = st.one_of(*(operation.as_strategy(mode, hooks=schema.hooks) for mode in GenerationMode))
    if tag == "research":
        credentials = {"headers": {"Authorization": f"Token {world.token}"}}
    else:
        credentials = {"headers": {"X-CSRFToken": world.csrf}, "cookies": world.cookies}

    @FUZZ
    @given(case=strategy)
    def fuzz(case):
        case.call_and_validate(checks=CHECKS, **credentials)

    fuzz()
