"""Synthetic annotators for demos and load tests: policies that answer a task like a person would.

Every answer goes through the same services as a person's (``item_next_for_annotator``,
``judgment_submit``), from accounts flagged ``synthetic`` so that aggregates and exports can
say how many of their votes are simulated.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from functools import lru_cache

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from annotation.models import ANNOTATORS_GROUP, AnnotatorProfile, Round
from annotation.services.assignment import Task, item_next_for_annotator
from annotation.services.submission import judgment_submit
from catalog.models import Image, Prompt


class PolicyError(ValueError):
    """A policy that cannot judge this round (for example noisy_oracle on images from outside the toy world)."""


@dataclass
class Policy:
    """How a synthetic annotator answers.

    - ``random``: uniform choices (a pairwise tie one time in five, yes/no at even odds).
    - ``prefer_model:NAME``: always for NAME's images; other choices random.
    - ``noisy_oracle``: the toy world's pixel oracle (``toyworld.oracle``) judges each image from
      its pixels and caption, and the annotator slips with probability ``noise``. Visual flaws:
      the higher texture fidelity wins (a tie within ``TIE_MARGIN``); visual appeal: the higher
      ``Judgement.appeal`` (a stated mix of fidelity and alignment accuracy); best/worst: fewest
      flaws first, by fidelity; alignment: the oracle's answer to each question. A slip picks the
      other image, swaps best and worst, or flips one answer. Toy-world images only.
    """

    kind: str  # random | prefer_model | noisy_oracle
    model: str = ""
    noise: float = 0.2

    TIE_MARGIN = 0.02

    @classmethod
    def parse(cls, text: str, *, noise: float = 0.2) -> Policy:
        if not 0.0 <= noise <= 1.0:
            raise PolicyError(f"--noise must be between 0 and 1, not {noise}")
        if text == "random":
            return cls("random", noise=noise)
        if text == "noisy_oracle":
            return cls("noisy_oracle", noise=noise)
        if text.startswith("prefer_model:") and text.split(":", 1)[1]:
            return cls("prefer_model", model=text.split(":", 1)[1], noise=noise)
        raise PolicyError(f"--policy must be random, prefer_model:NAME or noisy_oracle, not {text!r}")

    def check_round(self, round_: Round) -> None:
        """Refuse, before any judgment, a round this policy cannot judge."""
        if self.kind != "noisy_oracle":
            return
        from toyworld.scenes import CaptionError, parse_caption

        texts = Prompt.objects.filter(annotation_items__round=round_).values_list("text", flat=True).distinct()
        for text in texts:
            try:
                parse_caption(text)
            except CaptionError:
                raise PolicyError(
                    f"noisy_oracle judges toy-world images only; round {round_.pk} has the prompt {text[:80]!r}"
                ) from None

    def answer(self, task: Task, rng: random.Random) -> dict:
        layout = list(task.lease.layout)
        kind = task.round.kind
        if kind == Round.Kind.ALIGNMENT:
            return {"answers": self._alignment(task, rng)}
        if kind == Round.Kind.PAIRWISE and self.kind == "noisy_oracle":
            return self._pairwise_oracle(task, layout, rng)
        ranked = self._rank(task, layout, rng)  # best first
        if kind == Round.Kind.PAIRWISE:
            if self.kind == "random" and rng.random() < 0.2:
                return {"outcome": "tie"}
            return {"outcome": "win", "winner": ranked[0]}
        return {"best": ranked[0], "worst": ranked[-1]}

    def _rank(self, task: Task, layout: list[str], rng: random.Random) -> list[str]:
        if self.kind == "random":
            return rng.sample(layout, len(layout))
        if self.kind == "prefer_model":
            models = _models_shown(task)
            return sorted(layout, key=lambda pid: (models[pid] != self.model, rng.random()))
        views = _judgements(task, layout)
        ranked = sorted(layout, key=lambda pid: -views[pid].fidelity)
        if rng.random() < self.noise:  # a slip: the two ends trade places
            ranked[0], ranked[-1] = ranked[-1], ranked[0]
        return ranked

    def _pairwise_oracle(self, task: Task, layout: list[str], rng: random.Random) -> dict:
        views = _judgements(task, layout)
        score = (lambda pid: views[pid].appeal) if task.round.criterion == Round.Criterion.VISUAL_APPEAL else (
            lambda pid: views[pid].fidelity)
        first, second = layout
        if abs(score(first) - score(second)) < self.TIE_MARGIN:
            return {"outcome": "tie"}
        winner, loser = (first, second) if score(first) > score(second) else (second, first)
        if rng.random() < self.noise:
            winner = loser
        return {"outcome": "win", "winner": winner}

    def _alignment(self, task: Task, rng: random.Random) -> list[dict]:
        questions = [(q.pk, q.order) for q in task.item.questions()]
        image = task.lease.layout[0]
        if self.kind == "noisy_oracle":
            answers = _judgements(task, [image])[image].answers
            yes = {pk: answers.get(order, False) != (rng.random() < self.noise) for pk, order in questions}
        elif self.kind == "prefer_model":
            model = _models_shown(task)[image]
            yes = {pk: model == self.model or rng.random() < 0.5 for pk, _ in questions}
        else:
            yes = {pk: rng.random() < 0.5 for pk, _ in questions}
        return [{"question": pk, "answer": "yes" if yes[pk] else "no"} for pk, _ in questions]


def _catalog_ids(task: Task) -> dict[str, int]:
    """The task's image ids (the ids its item shows them under) -> the images' primary keys."""
    return {image.public_id: image.id for image in task.item.images()}


def _models_shown(task: Task) -> dict[str, str]:
    """The task's image ids -> the names of the models that made them."""
    ids = _catalog_ids(task)
    names = dict(Image.objects.filter(pk__in=ids.values()).values_list("pk", "model_version__name"))
    return {shown: names[pk] for shown, pk in ids.items()}


def _judgements(task: Task, shown: list[str]) -> dict:
    """The toy oracle's judgement of each of the task's images (images never change, so each is judged once)."""
    ids = _catalog_ids(task)
    return {public_id: _judgement(ids[public_id]) for public_id in shown}


@lru_cache(maxsize=4096)
def _judgement(image_pk: int):
    import numpy as np
    from PIL import Image as PILImage

    from toyworld.oracle import judge

    image = Image.objects.select_related("prompt").get(pk=image_pk)
    with image.file.open("rb") as handle:
        pixels = np.asarray(PILImage.open(handle).convert("RGB"))
    try:
        return judge(pixels, image.prompt.text)
    except ValueError as exc:
        raise PolicyError(f"noisy_oracle cannot judge image {image.public_id}: {exc}") from exc


def synthetic_annotators(*, count: int, prefix: str = "synthetic") -> list:
    """Get or create ``count`` annotator accounts flagged synthetic (no usable password)."""
    User = get_user_model()
    group, _ = Group.objects.get_or_create(name=ANNOTATORS_GROUP)
    users = []
    for n in range(1, count + 1):
        user, created = User.objects.get_or_create(username=f"{prefix}-{n:03d}")
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        user.groups.add(group)
        AnnotatorProfile.objects.update_or_create(user=user, defaults={"synthetic": True})
        users.append(user)
    return users


@dataclass
class SimulationResult:
    judgments: int
    annotators: int


def round_simulate(
    *, round_: Round, annotators: list, policy: Policy, seed: int = 0, max_judgments: int | None = None,
) -> SimulationResult:
    """Annotators take turns asking for their next item and answering it until nothing is left."""
    policy.check_round(round_)
    rng = random.Random(seed)
    done = 0
    active = list(annotators)
    while active and (max_judgments is None or done < max_judgments):
        for user in list(active):
            task = item_next_for_annotator(round_=round_, annotator=user, rng=rng)
            if task is None:
                active.remove(user)
                continue
            judgment_submit(
                annotator=user, lease_id=task.lease.id, client_uuid=uuid.uuid4(),  # fresh per judgment: a second run never reuses one
                answer=policy.answer(task, rng), elapsed_ms=rng.randint(800, 6000),
                # Simulated people answer far faster than the human rate limit allows.
                enforce_rate_limit=False,
            )
            done += 1
            if max_judgments is not None and done >= max_judgments:
                break
    return SimulationResult(judgments=done, annotators=len(annotators))
