"""Researcher pages: the report page, list, chart and exports; 403 for annotators; annotators stay blind."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET

import pytest
from django.test import Client
from PIL import Image as PILImage

from evaluation.charts import win_tie_loss_chart
from evaluation.models import EvaluationRound
from evaluation.services import evaluation_start, report_refresh
from tests.evaluation.builders import bulk_prompt_set, prompt_set_with_images, set_pairwise_outcomes
from tests.factories import AnnotatorFactory, ResearcherFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def evaluation():
    prompt_set, versions, _ = bulk_prompt_set(models=["base-secret", "pixel-secret"], n_prompts=10)
    evaluation = evaluation_start(model_versions=versions, prompt_set=prompt_set, from_existing=True).evaluation
    set_pairwise_outcomes(evaluation, "visual_flaws", ["A"] * 6 + ["tie"] * 3 + ["B"])
    set_pairwise_outcomes(evaluation, "visual_appeal", ["A"] * 2 + ["tie"] * 4 + ["B"] * 4)
    report_refresh(evaluation=evaluation)  # what the `default` worker does when a page first asks
    return evaluation


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_report_page_shows_the_paper_table_for_researchers(evaluation):
    response = login(ResearcherFactory()).get(f"/evaluation/{evaluation.pk}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Visual Flaws" in html and "Visual Appeal" in html and "Text alignment" in html
    assert "60.0" in html and "[31.3, 83.2]" in html  # 6 of 10 A wins with its Wilson interval
    assert "base-secret" in html and "pixel-secret" in html
    assert 'id="synthetic"' in html and "0 synthetic" in html
    assert "By prompt category" in html and "Animals" in html
    assert f"/evaluation/{evaluation.pk}/chart.svg" in html
    assert "nan" not in html.lower().replace("nance", "")
    assert "No judgments yet" not in html  # results stored without judgments are still results


def test_list_and_home_link(evaluation):
    client = login(ResearcherFactory())
    listing = client.get("/evaluation/").content.decode()
    assert f"/evaluation/{evaluation.pk}/" in listing and "base-secret, pixel-secret" in listing
    assert "/evaluation/" in client.get("/").content.decode()


@pytest.mark.parametrize("path", ["/evaluation/", "/evaluation/{pk}/", "/evaluation/{pk}/chart.png", "/evaluation/{pk}/report.csv"])
def test_annotators_get_403_and_anonymous_users_the_login(evaluation, path):
    url = path.format(pk=evaluation.pk)
    assert login(AnnotatorFactory()).get(url).status_code == 403
    anonymous = Client().get(url)
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]


def test_charts_are_valid_png_and_svg(evaluation):
    client = login(ResearcherFactory())
    png = client.get(f"/evaluation/{evaluation.pk}/chart.png")
    assert png["Content-Type"] == "image/png"
    picture = PILImage.open(io.BytesIO(png.content))
    picture.verify()
    assert picture.format == "PNG" and picture.size[0] > 300
    svg = client.get(f"/evaluation/{evaluation.pk}/chart.svg")
    assert svg["Content-Type"] == "image/svg+xml"
    root = ET.fromstring(svg.content)
    assert root.tag.endswith("svg")
    assert b"base-secret vs pixel-secret" in svg.content
    assert client.get(f"/evaluation/{evaluation.pk}/chart.gif").status_code == 404


def test_chart_of_a_table_without_results_still_draws():
    row = {"model_a": "a", "model_b": "b", "visual_flaws": None, "visual_appeal": {"n": 0, "a_wins": {"rate": None}}}
    assert win_tie_loss_chart([row], "png").startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match="chart format"):
        win_tie_loss_chart([row], "jpg")


def test_chart_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys; from evaluation.charts import win_tie_loss_chart; "
        "assert 'matplotlib' not in sys.modules; "
        "win_tie_loss_chart([{'model_a': 'a', 'model_b': 'b', 'visual_flaws': None, 'visual_appeal': None}], 'svg'); "
        "assert 'matplotlib' in sys.modules and 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("django.conf").conf.settings.BASE_DIR))


def test_exports_carry_the_same_numbers(evaluation):
    client = login(ResearcherFactory())
    data = json.loads(client.get(f"/evaluation/{evaluation.pk}/report.json").content)
    assert data["table"][0]["visual_flaws"]["a_wins"]["count"] == 6
    csv_text = client.get(f"/evaluation/{evaluation.pk}/report.csv").content.decode()
    assert csv_text.splitlines()[0].startswith("model_a,model_b")
    tex = client.get(f"/evaluation/{evaluation.pk}/report.tex")
    assert tex["Content-Disposition"] == f'attachment; filename="evaluation-{evaluation.pk}.tex"'
    assert rb"\toprule" in tex.content


def test_admin_creates_an_evaluation_from_existing_images():
    prompt_set, versions, _ = prompt_set_with_images(models=["base", "pixel"], n_prompts=3, seed=4)
    client = login(ResearcherFactory(is_superuser=True))
    page = client.get("/admin/evaluation/evaluationround/add/")
    assert page.status_code == 200 and "Create an evaluation round" in page.content.decode()
    bad = client.post("/admin/evaluation/evaluationround/add/", {
        "models": "base nope", "prompt_set": prompt_set.pk, "seed": 4, "k": 5, "from_existing": "on",
    })
    assert "no model version named &#x27;nope&#x27;" in bad.content.decode()
    response = client.post("/admin/evaluation/evaluationround/add/", {
        "models": "pixel, base", "prompt_set": prompt_set.pk, "seed": 4, "k": 5, "from_existing": "on",
    })
    assert response.status_code == 302
    evaluation = EvaluationRound.objects.get()
    assert [m.name for m in evaluation.ordered_models()] == ["pixel", "base"]
    assert evaluation.annotation_rounds.count() == 3
    assert client.get("/admin/evaluation/evaluationround/").status_code == 200


def test_annotator_api_stays_blind_for_evaluation_rounds():
    prompt_set, versions, _ = prompt_set_with_images(models=["base-secret", "pixel-secret"], n_prompts=2)
    evaluation = evaluation_start(model_versions=versions, prompt_set=prompt_set, from_existing=True).evaluation
    person = AnnotatorFactory()
    client = login(person)
    payloads = [client.get("/api/annotate/progress/").json()]
    for round_ in evaluation.annotation_rounds.all():
        response = client.post(f"/api/annotate/rounds/{round_.pk}/next/", "{}", content_type="application/json")
        assert response.status_code == 200
        payloads.append(response.json())
    text = json.dumps(payloads)
    for secret in ("base-secret", "pixel-secret", evaluation.name, "/models/", "seed", "generation", "evaluation_round"):
        assert secret not in text
    # The task has exactly the annotation app's keys: the evaluation adds nothing.
    task_keys = {"lease", "round", "kind", "criterion", "expires_at", "prompt", "images", "choices", "questions"}
    assert all(set(p["task"]) == task_keys for p in payloads[1:])
    # Round names are free text written by researchers: annotators get the kind, never the name.
    rounds = payloads[0]["rounds"]
    assert all("name" not in r for r in rounds)
    assert sorted((r["kind"], r["criterion"] or "") for r in rounds) == [
        ("alignment", ""), ("pairwise", "visual_appeal"), ("pairwise", "visual_flaws"),
    ]
