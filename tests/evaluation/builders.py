"""Builders for evaluation tests: models, prompts with questions, images at the evaluation's seeds."""

from __future__ import annotations

import uuid

from annotation import services as annotation_services
from annotation.models import Round
from evaluation.services import prompt_seed
from tests.factories import AlignmentQuestionFactory, AnnotatorFactory, ImageFactory, ModelVersionFactory, PromptFactory, PromptSetFactory


def prompt_set_with_images(
    *, models: list[str], n_prompts: int = 6, seed: int = 0, with_questions: int | None = None,
    categories=("Animals", "Vehicles"), skip: set[tuple[int, str]] = frozenset(), set_name: str = "parti-test",
):
    """A prompt set, model versions, and one image per prompt per model at ``prompt_seed(seed, ...)``.

    The first ``with_questions`` prompts (default: all) get two alignment questions, the second
    depending on the first. ``skip`` holds (prompt index, model name) pairs left without an image.
    """
    prompt_set = PromptSetFactory(name=set_name)
    versions = [ModelVersionFactory(name=name) for name in models]
    with_questions = n_prompts if with_questions is None else with_questions
    prompts = []
    for n in range(n_prompts):
        prompt = PromptFactory(prompt_set=prompt_set, external_id=f"{set_name}-{n}", category=categories[n % len(categories)])
        if n < with_questions:
            first = AlignmentQuestionFactory(prompt=prompt, order=1, text="Is there a bird?")
            second = AlignmentQuestionFactory(prompt=prompt, order=2, text="Is the bird blue?")
            second.parents.add(first)
        image_seed = prompt_seed(seed=seed, external_id=prompt.external_id)
        for m, version in enumerate(versions):
            if (n, version.name) not in skip:
                ImageFactory(prompt=prompt, model_version=version, seed=image_seed, color=(n * 20 % 255, m * 60, 90))
        prompts.append(prompt)
    return prompt_set, versions, prompts


def annotate_round(round_: Round, people, choose) -> int:
    """Every person judges every item they are given; ``choose(lease, person)`` returns the answer.

    Goes through the annotation services (assignment, then submission), like the API does.
    Returns the number of judgments stored.
    """
    stored = 0
    for person in people:
        while True:
            lease = annotation_services.item_next_for_annotator(round_=round_, annotator=person)
            if lease is None:
                break
            annotation_services.judgment_submit(
                annotator=person, lease_id=lease.pk, client_uuid=uuid.uuid4(), answer=choose(lease, person),
                elapsed_ms=1200,
            )
            stored += 1
    return stored


def annotators(n: int, **kwargs):
    return [AnnotatorFactory(**kwargs) for _ in range(n)]
