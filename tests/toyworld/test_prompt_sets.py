"""`import_prompts --preset toy` brings both toy splits in, with their DSG questions."""

import pytest
from django.core.management import call_command

from toyworld.questions import scene_questions
from toyworld.scenes import parse_caption

pytestmark = pytest.mark.django_db


def test_the_toy_preset_imports_both_splits_with_their_questions(capsys):
    from catalog.models import PromptSet

    call_command("import_prompts", "--preset", "toy")
    train, evaluation = PromptSet.objects.get(name="toy-train"), PromptSet.objects.get(name="toy-eval")
    assert (train.prompts.count(), evaluation.prompts.count()) == (1000, 200)
    assert not set(train.prompts.values_list("text", flat=True)) & set(evaluation.prompts.values_list("text", flat=True))
    prompt = evaluation.prompts.get(external_id="toy-eval-0001")
    questions = list(prompt.questions.order_by("order"))
    assert [q.text for q in questions] == [q.text for q in scene_questions(parse_caption(prompt.text))]
    assert list(questions[1].parents.values_list("order", flat=True)) == [1]
    call_command("import_prompts", "--preset", "toy")  # again: nothing changes
    assert "0 prompts created, 0 updated, 200 unchanged" in capsys.readouterr().out
