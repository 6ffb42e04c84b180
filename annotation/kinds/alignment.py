"""Text alignment: yes/no questions (DSG) about one image against its prompt."""

from __future__ import annotations

from collections.abc import Sequence

from annotation import sql, voting
from annotation.errors import InvalidAnswer, InvalidRoundSpec
from annotation.kinds.base import ImageRow, ItemContext, ItemKind, ItemSpec, KindAggregate, ParsedAnswer
from annotation.models import Aggregate, AlignmentAnswer, Judgment, Round
from catalog.models import AlignmentQuestion


def prompts_with_questions(prompt_ids) -> set[int]:
    return set(AlignmentQuestion.objects.filter(prompt_id__in=set(prompt_ids)).values_list("prompt_id", flat=True))


class Alignment(ItemKind):
    value = Round.Kind.ALIGNMENT
    page = ("annotate-alignment", "annotation/alignment.html")
    answer_format = "{answers: [{question, answer: yes | no}]}"

    def images_check(self, n_images: int) -> str | None:
        return None if n_images == 1 else f"an alignment item needs 1 image, got {n_images}"

    def items_check(self, specs: Sequence[ItemSpec]) -> None:
        super().items_check(specs)
        with_questions = prompts_with_questions(s.prompt_id for s in specs)
        for index, spec in enumerate(specs):
            if spec.prompt_id not in with_questions:
                raise InvalidRoundSpec(
                    f"item {index}: prompt {spec.prompt_id} has no alignment questions", field="items"
                )

    def items_build(self, *, rows: Sequence[ImageRow], model_ids: Sequence[int], n: int) -> list[ItemSpec]:
        """One item per image whose prompt has alignment questions."""
        with_questions = prompts_with_questions(r[1] for r in rows)
        return [
            ItemSpec(prompt_id=prompt_id, image_ids=(image_id,))
            for image_id, prompt_id, _seed, _model in rows if prompt_id in with_questions
        ]

    def answer_parse(self, *, item: ItemContext, answer: dict, field: str) -> ParsedAnswer:
        entries = answer.get("answers")
        if not isinstance(entries, list):
            raise InvalidAnswer("'answers' must be a list of {question, answer}", field=field)
        question_ids = {q.pk for q in item.questions()}
        parsed: dict[int, bool] = {}
        for n, entry in enumerate(entries):
            question = entry.get("question") if isinstance(entry, dict) else None
            # Exactly an integer: a float, a bool or a list is refused, not compared with the ids.
            if type(question) is not int or question not in question_ids:
                raise InvalidAnswer(f"answers[{n}]: 'question' must be one of this item's questions", field=field)
            if entry.get("answer") not in ("yes", "no"):
                raise InvalidAnswer(f"answers[{n}]: 'answer' must be 'yes' or 'no'", field=field)
            if entry["question"] in parsed:
                raise InvalidAnswer(f"answers[{n}]: question {entry['question']} is answered twice", field=field)
            parsed[entry["question"]] = entry["answer"] == "yes"
        missing = sorted(question_ids - parsed.keys())
        if missing:
            raise InvalidAnswer(f"questions {missing} have no answer", field=field)
        return ParsedAnswer(outcome=Judgment.Outcome.ALIGNMENT, answers=parsed)

    def gold_score(self, *, parsed: ParsedAnswer, gold: ParsedAnswer) -> float:
        agree = sum(parsed.answers[q] == gold.answers.get(q) for q in parsed.answers)
        return agree / len(parsed.answers) if parsed.answers else 1.0

    def aggregate(self, *, item: ItemContext, votes: list[sql.VoteRow], k: int) -> KindAggregate:
        questions = item.questions()
        parents = {q.pk: [p.pk for p in q.parents.all()] for q in questions}
        answers: dict[int, dict[int, bool]] = {v.id: {} for v in votes}
        for judgment_id, question_id, value in AlignmentAnswer.objects.filter(judgment_id__in=answers).values_list(
            "judgment_id", "question_id", "answer"
        ):
            answers[judgment_id][question_id] = value
        result = voting.alignment_majority(
            [answers[v.id] for v in votes], questions=[q.pk for q in questions], parents=parents, k=k
        )
        return KindAggregate(
            outcome=Aggregate.Outcome.ALIGNMENT if votes else Aggregate.Outcome.PENDING, used=votes,
            counts={"yes": {str(q): n for q, n in result.yes_counts.items()}, "votes": result.n_votes},
            question_results={str(q): yes for q, yes in result.answers.items()}, alignment_score=result.score,
        )

    def task_fields(self, *, item: ItemContext) -> dict:
        questions = [
            {"id": q.pk, "text": q.text, "parents": sorted(p.pk for p in q.parents.all())} for q in item.questions()
        ]
        return {"prompt": item.prompt_text(), "choices": ["yes", "no"], "questions": questions}
