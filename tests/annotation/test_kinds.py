"""Item kinds as a registry: every round kind has one class, and the criteria come from one enum."""

from __future__ import annotations

import pytest
from django.template.loader import get_template
from django.urls import reverse

from annotation.criteria import Criterion
from annotation.errors import InvalidRoundSpec
from annotation.kinds import KINDS, ItemSpec, item_kind, kinds_with_pairs
from annotation.models import Round


def test_every_round_kind_has_a_registered_kind_with_a_page():
    assert set(KINDS) == set(Round.Kind.values)
    for value, kind in KINDS.items():
        assert kind.value == value
        url_name, template = kind.page
        assert reverse(url_name, kwargs={"round_id": 1}).endswith("/1/")
        get_template(template)


def test_pairs_come_from_pairwise_and_best_worst_rounds_only():
    assert sorted(kinds_with_pairs()) == ["best_worst", "pairwise"]


@pytest.mark.parametrize("kind, criterion, refused", [
    ("pairwise", "", True), ("pairwise", "visual_flaws", False),
    ("best_worst", "visual_flaws", True), ("best_worst", "", False), ("alignment", "visual_appeal", True),
])
def test_round_check_asks_a_criterion_of_pairwise_rounds_only(kind, criterion, refused):
    if refused:
        with pytest.raises(InvalidRoundSpec) as exc:
            item_kind(kind).round_check(criterion=criterion)
        assert exc.value.field == "criterion"
    else:
        item_kind(kind).round_check(criterion=criterion)


@pytest.mark.parametrize("kind, n_images, refused", [
    ("pairwise", 2, False), ("pairwise", 3, True), ("best_worst", 2, True), ("best_worst", 5, False),
    ("alignment", 2, True),
])
def test_items_check_counts_images_per_kind(kind, n_images, refused):
    spec = ItemSpec(prompt_id=1, image_ids=tuple(range(1, n_images + 1)))
    if refused:
        with pytest.raises(InvalidRoundSpec, match="item 0"):
            item_kind(kind).items_check([spec])
    else:
        item_kind(kind).items_check([spec])


def test_pairwise_items_are_built_per_prompt_and_seed_that_both_models_have():
    rows = [(1, 10, 0, 100), (2, 10, 0, 200), (3, 10, 1, 100), (4, 11, 0, 200), (5, 11, 0, 100)]
    specs = item_kind("pairwise").items_build(rows=rows, model_ids=[100, 200], n=0)
    assert [(s.prompt_id, s.image_ids) for s in specs] == [(10, (1, 2)), (11, (5, 4))]


def test_criteria_are_one_enum_for_models_reports_and_pages():
    from evaluation import charts, report_format, reports, stats

    values = [c.value for c in Criterion]
    assert [value for value, _ in Round._meta.get_field("criterion").choices] == values
    assert list(stats.CRITERIA) == values
    assert list(reports.CRITERION_TITLES) == values
    assert [key for key, _ in charts.TITLES] == values
    assert [key for key, _ in report_format.CRITERIA] == values
    assert Criterion("visual_flaws").label == "Visual flaws"


@pytest.mark.django_db
def test_a_bad_round_spec_is_refused_as_a_round_spec_not_as_an_answer():
    from annotation.errors import InvalidAnswer
    from annotation.services.rounds import round_create
    from tests.factories import ImageFactory, PromptFactory

    prompt = PromptFactory()
    image = ImageFactory(prompt=prompt)
    with pytest.raises(InvalidRoundSpec) as exc:
        round_create(name="bad", kind="pairwise", criterion="visual_flaws",
                     items=[ItemSpec(prompt_id=prompt.pk, image_ids=(image.pk,))])
    assert exc.value.field == "items" and not isinstance(exc.value, InvalidAnswer)
    assert "needs 2 images" in exc.value.detail
    assert not Round.objects.exists()
