"""DSG-style yes/no questions of a toy scene, with their dependencies.

Each object gives an entity question ("is there a star?") and, depending on it, its colour,
size, texture (when not solid) and position. A textured background gives one more question.
Every question of a caption is answered "yes" by its ground-truth render. Questions are
numbered from 1; ``parents`` lists the numbers a question depends on (the DSG rule: a child
counts as "no" when a parent's answer is "no").
"""

from __future__ import annotations

from dataclasses import dataclass

from toyworld.scenes import POSITION_PHRASES, Scene


@dataclass(frozen=True)
class Question:
    order: int
    text: str
    parents: tuple[int, ...]
    # What the question asks, for the oracle: (attribute, shape, expected value).
    attribute: str
    shape: str | None
    value: str


def scene_questions(scene: Scene) -> list[Question]:
    questions: list[Question] = []

    def add(text: str, parents: tuple[int, ...], attribute: str, shape: str | None, value: str) -> int:
        questions.append(Question(len(questions) + 1, text, parents, attribute, shape, value))
        return len(questions)

    for obj in scene.objects:
        entity = add(f"is there a {obj.shape}?", (), "shape", obj.shape, obj.shape)
        add(f"is the {obj.shape} {obj.colour}?", (entity,), "colour", obj.shape, obj.colour)
        add(f"is the {obj.shape} {obj.size}?", (entity,), "size", obj.shape, obj.size)
        if obj.texture != "solid":
            add(f"is the {obj.shape} {obj.texture}?", (entity,), "texture", obj.shape, obj.texture)
        if len(scene.objects) > 1:
            add(f"is the {obj.shape} {POSITION_PHRASES[obj.position]}?", (entity,), "position", obj.shape, obj.position)
    if scene.background != "plain":
        add(f"is the background {scene.background}?", (), "background", None, scene.background)
    return questions


def true_answer(question: Question, asked: Scene, shown: Scene) -> bool:
    """The right answer to a question of ``asked``'s caption about a render of ``shown``.

    Both scenes must share a layout. An object is found where ``asked`` puts it if it is there,
    else anywhere it was drawn, as the oracle reads it.
    """
    if question.attribute == "background":
        return shown.background == question.value
    by_position = {o.position: o for o in shown.objects}
    stated = asked.object(question.shape).position
    found = by_position[stated] if by_position[stated].shape == question.shape else next(
        (o for o in shown.objects if o.shape == question.shape), None)
    if question.attribute == "shape":
        return found is not None
    if question.attribute == "position":
        return by_position[question.value].shape == question.shape
    return found is not None and getattr(found, question.attribute) == question.value
