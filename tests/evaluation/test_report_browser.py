"""The report page in Chromium: a stale report shows with a note, and the page reloads when the new one is stored."""

from __future__ import annotations

import pytest

from annotation.models import Round
from evaluation.services import evaluation_start, report_refresh
from tests.annotation.test_browser import PASSWORD, browser, open_page, sync_orm_beside_playwright  # noqa: F401
from tests.evaluation.builders import annotate_round, annotators, prompt_set_with_images
from tests.evaluation.test_report_store import choose_a
from tests.factories import ResearcherFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_stale_report_page_polls_and_reloads_with_the_new_report(open_page, eager_tasks):
    prompt_set, versions, _ = prompt_set_with_images(models=["base", "pixel"], n_prompts=4, with_questions=0)
    evaluation = evaluation_start(model_versions=versions, prompt_set=prompt_set, from_existing=True).evaluation
    report_refresh(evaluation=evaluation)
    annotate_round(evaluation.annotation_rounds.get(criterion=Round.Criterion.VISUAL_FLAWS), annotators(5), choose_a)
    researcher = ResearcherFactory()

    page = open_page()
    page.goto("/accounts/login/")
    page.fill("#id_username", researcher.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    # This view finds 20 new judgments: it shows the stored report and asks for a new one, which
    # the eager task computes at once; the page's poll then finds it and reloads.
    page.goto(f"/evaluation/{evaluation.pk}/")
    assert "20 judgments now" in page.text_content("#report-age")
    page.wait_for_function(
        "() => document.querySelector('#report-age').textContent.includes('from 20 judgments')", timeout=15_000
    )
    assert "judgments now" not in page.text_content("#report-age")
    assert "100.0" in page.text_content("#paper-table")  # every visual-flaws prompt won by Model A
    assert not [m for m in page.console_messages if "pageerror" in m]
