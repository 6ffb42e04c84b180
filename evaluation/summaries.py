"""What the evaluation services made, in lines for people: shared by `create_evaluation` and the admin."""

from __future__ import annotations

from evaluation.services import EvaluationStart


def describe_start(result: EvaluationStart) -> list[str]:
    """Lines that say what ``evaluation_start`` made."""
    evaluation = result.evaluation
    lines = [
        f"evaluation {evaluation.pk} '{evaluation.name}': {result.jobs} generation jobs, "
        f"{result.filled} filled from existing images"
    ]
    build = result.build
    if build is None:
        lines.append(f"images: {result.jobs - result.filled} sent to the gpu queue; the annotation rounds are created "
                     "when the last one is done")
        return lines
    for round_ in build.rounds:
        label = round_.criterion or round_.kind
        lines.append(f"round {round_.pk} '{round_.name}': {build.items[label]} items ({label})")
    lines.append(f"prompts used: {build.prompts_used}")
    if build.prompts_without_questions:
        lines.append(f"prompts without alignment questions (no alignment items): {build.prompts_without_questions}")
    return lines


def describe_missing(missing: list[dict], limit: int = 20) -> list[str]:
    """Lines that name the prompts an evaluation left out, at most ``limit`` of them."""
    lines = [f"{len(missing)} prompts left out: an image is missing"] if missing else []
    for entry in missing[:limit]:
        lines.append(f"  prompt {entry['prompt']}: no image from {', '.join(entry['models'])}")
    if len(missing) > limit:
        lines.append(f"  ... and {len(missing) - limit} more (the evaluation lists them all)")
    return lines
