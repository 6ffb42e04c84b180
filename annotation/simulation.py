"""Synthetic annotators for demos and load tests: policies that answer a task like a person would.

Every answer goes through the same services as a person's (``item_next_for_annotator``,
``judgment_submit``), from accounts flagged ``synthetic`` so that aggregates and exports can
say how many of their votes are simulated.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from annotation import services
from annotation.models import ANNOTATORS_GROUP, AnnotatorProfile, Lease, Round
from catalog.models import Image


def _unit(*parts) -> float:
    """A stable pseudo-random number in [0, 1) from its parts: the hidden 'truth' of the oracle."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass
class Policy:
    kind: str  # random | prefer_model | noisy_oracle
    model: str = ""
    noise: float = 0.2

    @classmethod
    def parse(cls, text: str, *, noise: float = 0.2) -> Policy:
        if text == "random":
            return cls("random", noise=noise)
        if text == "noisy_oracle":
            return cls("noisy_oracle", noise=noise)
        if text.startswith("prefer_model:") and text.split(":", 1)[1]:
            return cls("prefer_model", model=text.split(":", 1)[1], noise=noise)
        raise ValueError(f"--policy must be random, prefer_model:NAME or noisy_oracle, not {text!r}")

    def answer(self, lease: Lease, rng: random.Random) -> dict:
        layout = list(lease.layout)
        kind = lease.round.kind
        if kind == Round.Kind.ALIGNMENT:
            return {"answers": [{"question": q, "answer": "yes" if self._yes(lease, q, rng) else "no"}
                                for q in lease.item.prompt.questions.values_list("pk", flat=True)]}
        ranked = self._rank(layout, rng)  # best first
        if kind == Round.Kind.PAIRWISE:
            if self.kind == "random" and rng.random() < 0.2:
                return {"outcome": "tie"}
            return {"outcome": "win", "winner": ranked[0]}
        return {"best": ranked[0], "worst": ranked[-1]}

    def _rank(self, layout: list[str], rng: random.Random) -> list[str]:
        if self.kind == "random":
            return rng.sample(layout, len(layout))
        if self.kind == "prefer_model":
            models = dict(Image.objects.filter(public_id__in=layout).values_list("public_id", "model_version__name"))
            return sorted(layout, key=lambda pid: (models[pid] != self.model, rng.random()))
        ranked = sorted(layout, key=lambda pid: -_unit("quality", pid))
        if rng.random() < self.noise:  # a slip: the two ends trade places
            ranked[0], ranked[-1] = ranked[-1], ranked[0]
        return ranked

    def _yes(self, lease: Lease, question: int, rng: random.Random) -> bool:
        image = lease.layout[0]
        if self.kind == "random":
            return rng.random() < 0.5
        if self.kind == "prefer_model":
            model = Image.objects.filter(public_id=image).values_list("model_version__name", flat=True).first()
            return model == self.model or rng.random() < 0.5
        truth = _unit("aligned", image, question) < 0.7
        return truth != (rng.random() < self.noise)


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
    rng = random.Random(seed)
    done = 0
    active = list(annotators)
    while active and (max_judgments is None or done < max_judgments):
        for user in list(active):
            lease = services.item_next_for_annotator(round_=round_, annotator=user, rng=rng)
            if lease is None:
                active.remove(user)
                continue
            lease.round = round_
            services.judgment_submit(
                annotator=user, lease_id=lease.pk, client_uuid=uuid.UUID(int=rng.getrandbits(128)),
                answer=policy.answer(lease, rng), elapsed_ms=rng.randint(800, 6000),
                # Simulated people answer far faster than the human rate limit allows.
                enforce_rate_limit=False,
            )
            done += 1
            if max_judgments is not None and done >= max_judgments:
                break
    return SimulationResult(judgments=done, annotators=len(annotators))
