"""The model page lists the models it was trained from, back to the base, with each model's
evaluation results against its parent; the run page links the new model's evaluation."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from evaluation.services import evaluation_start, report_refresh
from tests.evaluation.builders import prompt_set_with_images, set_pairwise_outcomes
from tests.factories import ResearcherFactory
from tests.training.run_builders import make_run
from training.models import TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def researcher() -> Client:
    client = Client()
    client.force_login(ResearcherFactory())
    return client


@pytest.fixture
def lineage():
    """base → tuned → tuned2, each child trained by a run and evaluated against its parent."""
    prompt_set, (base, tuned, tuned2), _ = prompt_set_with_images(
        models=["base", "tuned", "tuned2"], n_prompts=4, with_questions=0,
    )
    tuned.parent, tuned2.parent = base, tuned
    tuned.save(), tuned2.save()
    runs = [
        make_run(TrainingRun.Status.SUCCEEDED, name="run-tuned", base_model=base, output_model=tuned, n_points=5,
                 metrics={"steps": 500}),
        make_run(TrainingRun.Status.SUCCEEDED, name="run-tuned2", base_model=tuned, output_model=tuned2, n_points=5,
                 metrics={"steps": 800}),
    ]
    # tuned is Model A against base; tuned2 is Model B against tuned (its side of the table is B's)
    first = evaluation_start(model_versions=[tuned, base], prompt_set=prompt_set, from_existing=True,
                             name="tuned vs base").evaluation
    set_pairwise_outcomes(first, "visual_flaws", ["A", "A", "tie", "B"])
    second = evaluation_start(model_versions=[tuned, tuned2], prompt_set=prompt_set, from_existing=True,
                              name="tuned vs tuned2").evaluation
    set_pairwise_outcomes(second, "visual_flaws", ["A", "B", "B", "B"])
    for evaluation in (first, second):
        report_refresh(evaluation=evaluation)
    return {"models": (base, tuned, tuned2), "runs": runs, "evaluations": (first, second)}


def rows(html: str) -> dict[str, str]:
    return dict(re.findall(r'<tr class="lineage-row" data-model="([^"]+)">(.*?)</tr>\s*(?=<tr class="lineage-row"|</tbody>)',
                           html, re.S))


def flaws(cell: str) -> list[str]:
    row = re.search(r"<th>Visual flaws</th>(.*?)</tr>", cell, re.S).group(1)
    return [re.sub(r"\s+", " ", text).strip() for text in re.findall(r"<td>(.*?)</td>", row, re.S)]


def test_the_model_page_lists_the_lineage_back_to_the_base_with_results_against_each_parent(researcher, lineage):
    base, tuned, tuned2 = lineage["models"]
    first, second = lineage["evaluations"]
    response = researcher.get(f"/admin/catalog/modelversion/{tuned2.pk}/change/")
    assert response.status_code == 200
    html = response.content.decode()
    found = rows(html)
    assert list(found) == ["tuned2", "tuned", "base"]  # the model first, the base last
    assert "(base)" in found["base"] and "<strong>tuned2</strong>" in found["tuned2"]
    assert f'href="/admin/catalog/modelversion/{base.pk}/change/"' in found["base"]

    # the training app's column: the run that trained each model
    run_tuned, run_tuned2 = lineage["runs"]
    assert f'<a href="/admin/training/trainingrun/{run_tuned2.pk}/change/">run-tuned2</a>' in found["tuned2"]
    assert "800 steps on" in found["tuned2"] and "500 steps on" in found["tuned"]

    # the evaluation app's column: win / tie / loss of the model against its parent, with intervals
    assert f'<a href="/evaluation/{second.pk}/">tuned vs tuned2</a>' in found["tuned2"]
    assert flaws(found["tuned2"])[:4] == [
        '75.0 <span class="ci">[30.1, 95.4]</span>', '0.0 <span class="ci">[0.0, 49.0]</span>',
        '25.0 <span class="ci">[4.6, 69.9]</span>', "4",
    ]  # tuned2 was Model B: its wins are B's (Wilson 95 % intervals of 3, 0 and 1 in 4)
    assert f'<a href="/evaluation/{first.pk}/">tuned vs base</a>' in found["tuned"]
    assert flaws(found["tuned"])[:4] == [
        '50.0 <span class="ci">[15.0, 85.0]</span>', '25.0 <span class="ci">[4.6, 69.9]</span>',
        '25.0 <span class="ci">[4.6, 69.9]</span>', "4",
    ]
    assert "tuned2 wins" in found["tuned2"] and "tuned wins" in found["tuned2"]
    assert "against its parent" in html and "trained by" in html
    assert "vs" not in found["base"]  # a base model has no parent to be measured against


def test_the_run_page_links_the_new_models_evaluation_against_its_base(researcher, lineage):
    run = lineage["runs"][1]
    html = researcher.get(f"/admin/training/trainingrun/{run.pk}/change/").content.decode()
    section = re.search(r'id="run-section-evaluation">(.*?)</section>', html, re.S).group(1)
    assert "Evaluation against the base" in section
    assert f'<a href="/evaluation/{lineage["evaluations"][1].pk}/">tuned vs tuned2</a>' in section
    assert flaws(section)[0] == '75.0 <span class="ci">[30.1, 95.4]</span>'
