"""create_round, simulate_annotators and recompute_aggregates, end to end on the database."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from annotation.models import Aggregate, AnnotatorProfile, Item, Judgment, Round
from tests.factories import AlignmentQuestionFactory, ImageFactory, ModelVersionFactory, PromptFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def gallery():
    """Two models, three prompts, two seeds each; the second model misses one (prompt, seed)."""
    base, tuned = ModelVersionFactory(name="base"), ModelVersionFactory(name="tuned")
    prompts = [PromptFactory() for _ in range(3)]
    AlignmentQuestionFactory(prompt=prompts[0], order=1)
    for n, prompt in enumerate(prompts):
        for seed in (1, 2):
            ImageFactory(prompt=prompt, model_version=base, seed=seed, color=(n, seed, 1))
            if (n, seed) != (2, 2):
                ImageFactory(prompt=prompt, model_version=tuned, seed=seed, color=(n, seed, 2))
    for seed in range(3, 8):
        ImageFactory(prompt=prompts[1], model_version=base, seed=seed, color=(9, seed, 9))
    return base, tuned, prompts


def test_pairwise_round_pairs_images_of_the_same_prompt_and_seed(gallery):
    call_command("create_round", "--kind", "pairwise", "--name", "ab", "--models", "base", "tuned",
                 "--criterion", "visual_flaws", "--k", "3")
    round_ = Round.objects.get(name="ab")
    assert (round_.kind, round_.criterion, round_.k) == ("pairwise", "visual_flaws", 3)
    items = Item.objects.filter(round=round_)
    assert items.count() == 5  # 6 (prompt, seed) pairs, one missing for the tuned model
    for item in items:
        images = [ii.image for ii in item.item_images.order_by("order")]
        assert [i.model_version.name for i in images] == ["base", "tuned"]
        assert images[0].seed == images[1].seed and images[0].prompt_id == images[1].prompt_id == item.prompt_id


def test_best_worst_round_groups_n_images_of_one_prompt(gallery):
    call_command("create_round", "--kind", "best_worst", "--name", "bw", "--models", "base", "--n", "5")
    items = Item.objects.filter(round__name="bw")
    # Prompt 1 has 7 base images: one item of 5; the others have 2 and make none.
    assert items.count() == 1 and items.get().item_images.count() == 5


def test_alignment_round_takes_images_whose_prompt_has_questions(gallery):
    _, _, prompts = gallery
    call_command("create_round", "--kind", "alignment", "--name", "al", "--models", "base", "tuned")
    items = Item.objects.filter(round__name="al")
    assert items.count() == 4 and {i.prompt_id for i in items} == {prompts[0].pk}


@pytest.mark.parametrize("argv, message", [
    (["--kind", "pairwise", "--models", "base"], "exactly two"),
    (["--kind", "pairwise", "--models", "base", "tuned"], "--criterion"),
    (["--kind", "best_worst", "--models", "nope"], "no model version named 'nope'"),
    (["--kind", "best_worst", "--models", "tuned"], "no best_worst items"),
])
def test_create_round_errors_name_the_argument(gallery, argv, message):
    with pytest.raises(CommandError, match=message):
        call_command("create_round", "--name", "x", *argv)
    assert not Round.objects.exists()


def test_simulated_annotators_complete_a_round_and_are_flagged(gallery, capsys):
    call_command("create_round", "--kind", "pairwise", "--name", "sim", "--models", "base", "tuned",
                 "--criterion", "visual_appeal", "--k", "5")
    call_command("simulate_annotators", "sim", "--annotators", "6", "--policy", "prefer_model:tuned", "--seed", "3")
    round_ = Round.objects.get(name="sim")
    assert Judgment.objects.filter(round=round_).count() == 5 * 5
    assert set(Judgment.objects.values_list("synthetic", flat=True)) == {True}
    assert AnnotatorProfile.objects.filter(synthetic=True).count() == 6
    aggregates = Aggregate.objects.filter(round=round_)
    assert all(a.complete and a.winner.model_version.name == "tuned" and a.n_synthetic == 5 for a in aggregates)
    assert "25 synthetic judgments by 6 annotators" in capsys.readouterr().out
    call_command("recompute_aggregates", "sim")
    assert "5 pairs" in capsys.readouterr().out


@pytest.mark.parametrize("kind, extra", [
    ("best_worst", ["--models", "base"]), ("alignment", ["--models", "base", "tuned"]),
])
@pytest.mark.parametrize("policy", ["random", "prefer_model:base"])
def test_simulation_works_every_kind(gallery, kind, extra, policy):
    call_command("create_round", "--kind", kind, "--name", "r", "--k", "3", *extra)
    call_command("simulate_annotators", "r", "--annotators", "3", "--policy", policy)
    round_ = Round.objects.get(name="r")
    assert Aggregate.objects.filter(round=round_, complete=False).count() == 0


def test_simulation_rejects_unknown_policy(gallery):
    call_command("create_round", "--kind", "best_worst", "--name", "r", "--models", "base")
    with pytest.raises(CommandError, match="--policy"):
        call_command("simulate_annotators", "r", "--policy", "prefer_model:ghost")
    with pytest.raises(CommandError, match="--policy"):
        call_command("simulate_annotators", "r", "--policy", "coin")
