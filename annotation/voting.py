"""The vote rules of every item kind, in one place: pure functions of the votes, no Django.

Aggregation (``annotation.services.aggregation.item_aggregate``, through each item kind in
``annotation.kinds``) calls these functions and stores their
results on the item's ``Aggregate``; preference exports and evaluation reports read the stored
results and never vote again. The rules (also in ``docs/voting.md``):

- **Complete items.** K is the round's judgments per item. An item is complete once it has K
  judgments, counting "cannot compare" rejections and the judgments of annotators excluded for
  their gold accuracy. Exports and reports use complete items only; until then the stored
  aggregate holds the provisional result of the same rules on the votes so far.
- **Majority of K.** A label needs more than half of K votes: 3 of 5, 4 of 7
  (``majority_threshold``; more than half of the votes counted if more than K were counted).
  A vote that is missing (a rejection, an excluded annotator, a judgment still to come) counts
  for no label, so it can only prevent a majority, never make one.
- **Pairwise** (``pairwise_majority``): the labels are A (the item's first image), B and tie;
  "cannot compare" (``REJECT``) is no label. Without a majority the round's
  ``no_majority_rule`` decides: ``tie``, or ``mean_score``, the sign of the mean with A = +1,
  B = -1, tie = 0 (zero is a tie). An item whose every vote is a rejection has no outcome: it
  gives no preference pair and no report label.
- **Best/worst** (``best_worst_majority``): the winner has the most "best" votes, the loser the
  most "worst" votes, ties broken by best minus worst; an unresolved tie is ``ambiguous``.
- **Alignment** (``alignment_majority``): a question's answer is "yes" when a majority of K
  says yes (``question_majority``), else "no": an even split has not shown a "yes". Then the
  DSG rule on those majority answers (``dsg_apply``): a question counts as "no" when a question
  it depends on, directly or through others, counts as "no". A question on a dependency cycle
  (bad data: the prompt importer drops the edges that close cycles) is judged by its own
  majority only; the questions that depend on it follow its result as usual.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

# Pairwise votes are stated relative to the item's two images, `A` (its first image) and `B`.
A, B, TIE, REJECT = "a", "b", "tie", "reject"
PAIRWISE_VOTES = (A, B, TIE, REJECT)
NO_MAJORITY_TIE, NO_MAJORITY_MEAN_SCORE = "tie", "mean_score"
# How a round closed early counts its items short of K judgments.
COUNT_PARTIAL, DROP_PARTIAL = "count-partial", "drop-partial"
CLOSE_RULES = (COUNT_PARTIAL, DROP_PARTIAL)


def majority_threshold(*, k: int, n_votes: int) -> int:
    """Votes a label needs: more than half of K (3 of 5); more than half of the votes if more arrived."""
    return max(k, n_votes) // 2 + 1


def partial_minimum(*, k: int) -> int:
    """Counted votes an item short of K needs to be decided when its round closes under count-partial: ⌈K/2⌉ + 1."""
    return (k + 1) // 2 + 1


def closing_k(*, k: int, n_votes: int) -> int | None:
    """The K that a short item's majority is counted against when its round closes under ``count-partial``.

    With n ≥ ⌈K/2⌉ + 1 counted votes, the n votes themselves: a label then needs more than half of
    them (3 of 4, 4 of 6), by ``majority_threshold(k=n, ...)``. With fewer, None: the item is undecided.
    """
    return n_votes if n_votes >= partial_minimum(k=k) else None


@dataclass(frozen=True)
class PairwiseResult:
    outcome: str | None  # A, B, TIE, or None without a single valid vote
    no_majority: bool
    counts: dict[str, int]
    margin: float | None  # (winner votes - loser votes) / valid votes, for an A or B outcome


def pairwise_majority(votes: Iterable[str], *, k: int, no_majority_rule: str = NO_MAJORITY_TIE) -> PairwiseResult:
    """A label with a majority of K wins; rejections ("cannot compare") do not vote.

    Without a majority (2-2-1 with K = 5) the round's rule decides: ``tie``, or the sign of the
    mean score with A = +1, B = -1, tie = 0 (a zero mean is a tie).
    """
    if no_majority_rule not in (NO_MAJORITY_TIE, NO_MAJORITY_MEAN_SCORE):
        raise ValueError(f"no_majority_rule must be 'tie' or 'mean_score', not {no_majority_rule!r}")
    counts = Counter({A: 0, B: 0, TIE: 0, REJECT: 0})
    for vote in votes:
        if vote not in counts:
            raise ValueError(f"pairwise vote must be one of {PAIRWISE_VOTES}, not {vote!r}")
        counts[vote] += 1
    n_valid = counts[A] + counts[B] + counts[TIE]
    counts_out = dict(counts)
    if n_valid == 0:
        return PairwiseResult(outcome=None, no_majority=False, counts=counts_out, margin=None)
    threshold = majority_threshold(k=k, n_votes=n_valid)
    winners = [label for label in (A, B, TIE) if counts[label] >= threshold]
    if winners:
        outcome, no_majority = winners[0], False
    else:
        no_majority = True
        if no_majority_rule == NO_MAJORITY_TIE:
            outcome = TIE
        else:
            score = counts[A] - counts[B]  # the sign of the mean is the sign of the sum
            outcome = A if score > 0 else B if score < 0 else TIE
    margin = None
    if outcome in (A, B):
        other = B if outcome == A else A
        margin = (counts[outcome] - counts[other]) / n_valid
    return PairwiseResult(outcome=outcome, no_majority=no_majority, counts=counts_out, margin=margin)


@dataclass(frozen=True)
class BestWorstResult:
    winner: Hashable | None
    loser: Hashable | None
    ambiguous: bool  # votes exist but they name no single winner and loser
    best_counts: dict = field(default_factory=dict)
    worst_counts: dict = field(default_factory=dict)
    margin: float | None = None  # (score(winner) - score(loser)) / (2 * votes), score = best - worst


def _single(candidates: list, key) -> Hashable | None:
    """The one candidate with the highest key, or None if the top is shared."""
    ranked = sorted(candidates, key=key, reverse=True)
    if len(ranked) > 1 and key(ranked[0]) == key(ranked[1]):
        return None
    return ranked[0]


def best_worst_majority(votes: Sequence[tuple[Hashable, Hashable]], *, images: Sequence[Hashable]) -> BestWorstResult:
    """Winner: most "best" votes; loser: most "worst" votes; ties broken by best-minus-worst.

    An item whose tie-break still leaves two candidates, or whose winner is also its loser,
    yields no pair (``ambiguous``).
    """
    best = {image: 0 for image in images}
    worst = {image: 0 for image in images}
    for vote_best, vote_worst in votes:
        if vote_best not in best or vote_worst not in worst:
            raise ValueError(f"vote ({vote_best!r}, {vote_worst!r}) names an image outside the item")
        if vote_best == vote_worst:
            raise ValueError(f"vote marks {vote_best!r} both best and worst")
        best[vote_best] += 1
        worst[vote_worst] += 1
    if not votes:
        return BestWorstResult(winner=None, loser=None, ambiguous=False, best_counts=best, worst_counts=worst)
    score = {image: best[image] - worst[image] for image in images}
    top_best = max(best.values())
    top_worst = max(worst.values())
    winner = _single([i for i in images if best[i] == top_best], key=lambda i: score[i])
    loser = _single([i for i in images if worst[i] == top_worst], key=lambda i: -score[i])
    if winner is None or loser is None or winner == loser:
        return BestWorstResult(winner=None, loser=None, ambiguous=True, best_counts=best, worst_counts=worst)
    margin = max(0.0, (score[winner] - score[loser]) / (2 * len(votes)))
    return BestWorstResult(
        winner=winner, loser=loser, ambiguous=False, best_counts=best, worst_counts=worst, margin=margin
    )


def dsg_apply(answers: Mapping[Hashable, bool], parents: Mapping[Hashable, Iterable[Hashable]]) -> dict[Hashable, bool]:
    """The DSG rule (Cho et al. 2024, section 3) on one set of answers.

    A question counts as "no" when it is "no" or when any question it depends on counts as
    "no" (so the rule is transitive). A question on a dependency cycle is judged by its own
    answer only. Parents that are not among ``answers`` are ignored. The annotator page keeps a
    display-only copy in ``static/js/annotate/dsg.js``; both are tested on
    ``tests/annotation/dsg_cases.json``.
    """
    on_cycle = _on_cycle(answers, parents)
    resolved: dict[Hashable, bool] = {}

    def effective(question) -> bool:
        # Off a cycle the parents form no loop back here, so the recursion ends.
        if question not in resolved:
            value = bool(answers[question])
            if value and question not in on_cycle:
                value = all(effective(parent) for parent in parents.get(question, ()) if parent in answers)
            resolved[question] = value
        return resolved[question]

    return {question: effective(question) for question in answers}


def _on_cycle(answers: Mapping[Hashable, bool], parents: Mapping[Hashable, Iterable[Hashable]]) -> set:
    """The questions that depend on themselves through a chain of parents."""
    found = set()
    for question in answers:
        stack, seen = [p for p in parents.get(question, ()) if p in answers], set()
        while stack:
            current = stack.pop()
            if current == question:
                found.add(question)
                break
            if current not in seen:
                seen.add(current)
                stack.extend(p for p in parents.get(current, ()) if p in answers)
    return found


def question_majority(yes_votes: int, *, k: int, n_votes: int) -> bool:
    """A question's majority answer: "yes" with a majority of K yes votes, else "no"."""
    return yes_votes >= majority_threshold(k=k, n_votes=n_votes)


@dataclass(frozen=True)
class AlignmentResult:
    answers: dict  # question -> "yes" after the majority vote and then the DSG rule
    yes_counts: dict  # question -> "yes" votes as given (before the DSG rule)
    n_votes: int
    score: float | None  # share of questions whose final answer is "yes"


def alignment_majority(
    judgments: Sequence[Mapping[Hashable, bool]], *, questions: Sequence[Hashable],
    parents: Mapping[Hashable, Iterable[Hashable]], k: int,
) -> AlignmentResult:
    """Majority yes/no per question first (``question_majority``), then ``dsg_apply`` on them.

    The order matters: yes/no, no/yes, yes/yes on parent/child makes the child "yes" here
    (both majorities are "yes"), whereas applying the DSG rule to each judgment before voting
    would make it "no".
    """
    yes = {q: 0 for q in questions}
    for answers in judgments:
        missing = [q for q in questions if q not in answers]
        if missing:
            raise ValueError(f"judgment lacks answers for questions {missing}")
        for q in questions:
            yes[q] += int(bool(answers[q]))
    n = len(judgments)
    majority = {q: question_majority(yes[q], k=k, n_votes=n) for q in questions} if n else {}
    result = dsg_apply(majority, parents)
    score = (sum(result.values()) / len(result)) if result else None
    return AlignmentResult(answers=result, yes_counts=yes, n_votes=n, score=score)
