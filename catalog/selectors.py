"""Read-side queries of the catalog."""

from __future__ import annotations

import random

from django.urls import reverse

from catalog.models import ModelVersion, Prompt, PromptSet


def image_url(public_id: str) -> str:
    """The opaque URL of an image's bytes (served, behind login and lease checks, by the annotation app)."""
    return reverse("annotation-image", kwargs={"public_id": public_id})


def prompts_select(*, prompt_set: PromptSet, limit: int | None, seed: int) -> list[Prompt]:
    """The set's prompts, or a sample of ``limit`` of them drawn with ``seed`` (in set order).

    A sample rather than the first N, because prompt files are often sorted by category.
    """
    prompts = list(Prompt.objects.filter(prompt_set=prompt_set).order_by("id"))
    if limit is not None and limit < len(prompts):
        chosen = set(random.Random(seed).sample(range(len(prompts)), limit))
        prompts = [p for index, p in enumerate(prompts) if index in chosen]
    return prompts


def model_lineage(*, model_version: ModelVersion) -> list[ModelVersion]:
    """The model and the models it was trained from, back to the base: itself first, the base last."""
    chain, seen = [model_version], {model_version.pk}
    while chain[-1].parent_id is not None and chain[-1].parent_id not in seen:
        parent = ModelVersion.objects.get(pk=chain[-1].parent_id)
        chain.append(parent)
        seen.add(parent.pk)
    return chain
