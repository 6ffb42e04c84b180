"""The toy world in real Chromium: an annotator works one toy item of each kind, and a researcher
reads the report of an evaluation whose images the shipped toy pipelines generated."""

from __future__ import annotations

import re

import pytest
from django.core.management import call_command

from annotation.models import Judgment
from annotation.services.rounds import ItemSpec, round_create
from catalog.models import Image
from catalog.services import model_register
from evaluation.models import EvaluationRound
from evaluation.services import evaluation_start
from tests.annotation.test_browser import (  # noqa: F401  (fixtures)
    DESKTOP, PASSWORD, browser, eventually, login, open_page, shot, sync_orm_beside_playwright, wait_for_task,
)
from tests.factories import AnnotatorFactory, ResearcherFactory
from tests.toyworld.test_simulation import _toy_image, _toy_prompt
from toyworld.quality import MODELS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def toy_rounds():
    from tests.factories import ModelVersionFactory

    model = ModelVersionFactory(name="toy-secret-model")
    other = ModelVersionFactory(name="toy-secret-other")
    pair_prompt = _toy_prompt("a big red striped star on the left and a small blue circle on the right, on a noisy background")
    pair = (_toy_image(pair_prompt, model, 1, blur=0).pk, _toy_image(pair_prompt, other, 1, blur=1.0).pk)
    grid_prompt = _toy_prompt("a small green checkered square in the center, on a striped background")
    grid = tuple(_toy_image(grid_prompt, model, seed, blur=0.3 * seed).pk for seed in range(5))
    align_prompt = _toy_prompt("a big yellow dotted ring at the top and a small purple triangle at the bottom, on a checkered background")
    single = (_toy_image(align_prompt, model, 9, blur=0).pk,)
    rounds = {
        "pairwise": round_create(name="toy flaws", kind="pairwise", criterion="visual_flaws", k=5,
                                 items=[ItemSpec(prompt_id=pair_prompt.pk, image_ids=pair)]),
        "best_worst": round_create(name="toy grid", kind="best_worst", k=5,
                                   items=[ItemSpec(prompt_id=grid_prompt.pk, image_ids=grid)]),
        "alignment": round_create(name="toy questions", kind="alignment", k=5,
                                  items=[ItemSpec(prompt_id=align_prompt.pk, image_ids=single)]),
    }
    AnnotatorFactory(username="ann")
    return rounds


def test_an_annotator_works_one_toy_item_of_each_kind(toy_rounds, open_page):
    page = open_page(DESKTOP)
    login(page)
    page.click(f"a[href='/annotate/pairwise/{toy_rounds['pairwise'].pk}/']")
    wait_for_task(page, 2)
    size = page.eval_on_selector("#grid .pane img", "i => [i.naturalWidth, i.getBoundingClientRect().width]")
    assert size[0] == 64 and size[1] > 3 * 64  # a 64-px toy image is shown large
    shot(page, "toy-pairwise-1280x800")
    page.keyboard.press("ArrowLeft")
    eventually(page, lambda: Judgment.objects.filter(round=toy_rounds["pairwise"]).exists())

    page.goto(f"/annotate/best-worst/{toy_rounds['best_worst'].pk}/")
    wait_for_task(page, 5)
    shot(page, "toy-best-worst-1280x800")
    page.keyboard.press("1")
    page.keyboard.press("b")
    page.keyboard.press("5")
    page.keyboard.press("w")
    page.keyboard.press("Enter")
    judgment = eventually(page, lambda: Judgment.objects.filter(round=toy_rounds["best_worst"]).first())
    assert judgment.winner_id != judgment.loser_id

    page.goto(f"/annotate/alignment/{toy_rounds['alignment'].pk}/")
    wait_for_task(page, 1)
    assert "yellow dotted ring" in page.inner_text("#prompt")  # alignment shows its prompt
    shot(page, "toy-alignment-1280x800")
    for _ in range(toy_rounds["alignment"].items.first().prompt.questions.count()):
        page.keyboard.press("y")
    page.keyboard.press("Enter")
    eventually(page, lambda: Judgment.objects.filter(round=toy_rounds["alignment"]).exists())


def test_a_researcher_reads_the_report_of_a_toy_evaluation(open_page, eager_tasks, settings):
    settings.EVALUATION_SAMPLER = {"steps": 6}
    call_command("import_prompts", preset="toy-eval")
    models = [model_register(path=MODELS[name], name=name) for name in ("toy-pixart", "toy-sd")]
    from catalog.models import PromptSet

    started = evaluation_start(model_versions=models, prompt_set=PromptSet.objects.get(name="toy-eval"), limit=6, k=3)
    evaluation = EvaluationRound.objects.get(pk=started.evaluation.pk)
    assert Image.objects.filter(generation_jobs__batch=evaluation.generation_batch).count() == 12
    call_command("simulate_annotators", "--all-open", "--annotators", "3", "--policy", "noisy_oracle")
    ResearcherFactory(username="res")
    page = open_page(DESKTOP)
    page.goto(f"/accounts/login/?next=/evaluation/{evaluation.pk}/")
    page.fill("#id_username", "res")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#paper-table")
    table = page.inner_text("#paper-table")
    assert "toy-pixart" in table and "toy-sd" in table
    assert re.search(r"\[\d+\.\d, \d+\.\d\]", table)  # rates with their confidence intervals
    shot(page, "toy-report-1280x800")
