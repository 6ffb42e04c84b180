"""The criteria of pairwise rounds: one enum for the models, the annotator pages and the reports.

Plain Python (no Django), so that the statistics and report renderers can import it.
"""

from __future__ import annotations

from enum import StrEnum


class Criterion(StrEnum):
    VISUAL_FLAWS = "visual_flaws"
    VISUAL_APPEAL = "visual_appeal"

    @property
    def label(self) -> str:
        """Sentence case, as in titles and round names: "Visual flaws"."""
        return _LABELS[self]

    @property
    def question(self) -> str:
        """What the annotator is asked."""
        return _QUESTIONS[self]

    @classmethod
    def choices(cls) -> list[tuple[str, str]]:
        return [(c.value, c.label) for c in cls]


_LABELS = {Criterion.VISUAL_FLAWS: "Visual flaws", Criterion.VISUAL_APPEAL: "Visual appeal"}
_QUESTIONS = {
    Criterion.VISUAL_FLAWS: "Which image has fewer visual flaws?",
    Criterion.VISUAL_APPEAL: "Which image is more visually appealing?",
}
