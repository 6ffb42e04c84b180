"""Vote rules: hand-worked cases from the specification, every vote multiset up to K = 7, properties."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from annotation.voting import (
    A,
    B,
    REJECT,
    TIE,
    alignment_majority,
    best_worst_majority,
    closing_k,
    dsg_apply,
    majority_threshold,
    pairwise_majority,
    partial_minimum,
    question_majority,
)

DSG_CASES = json.loads((Path(__file__).parent / "dsg_cases.json").read_text())["cases"]

votes5 = st.lists(st.sampled_from([A, B, TIE, REJECT]), min_size=0, max_size=5)


class TestPairwise:
    def test_three_of_five_wins(self):
        result = pairwise_majority([A, A, A, B, B], k=5)
        assert (result.outcome, result.no_majority) == (A, False)
        assert result.margin == pytest.approx(1 / 5)

    def test_tie_label_can_win(self):
        assert pairwise_majority([TIE, TIE, TIE, A, B], k=5).outcome == TIE

    def test_two_two_one_is_a_tie_by_default(self):
        result = pairwise_majority([A, A, B, B, TIE], k=5)
        assert (result.outcome, result.no_majority) == (TIE, True)

    def test_two_two_one_under_mean_score_is_still_a_tie_when_balanced(self):
        result = pairwise_majority([A, A, B, B, TIE], k=5, no_majority_rule="mean_score")
        assert (result.outcome, result.no_majority) == (TIE, True)

    def test_mean_score_rule_takes_the_sign(self):
        # 2 A, 1 B, 2 tie: nobody has 3, the mean (2 - 1) / 5 is positive.
        result = pairwise_majority([A, A, B, TIE, TIE], k=5, no_majority_rule="mean_score")
        assert (result.outcome, result.no_majority) == (A, True)
        assert pairwise_majority([A, A, B, TIE, TIE], k=5).outcome == TIE

    def test_rejections_are_excluded(self):
        # Two "cannot compare" leave 2 A and 1 B: no label has 3 of 5.
        result = pairwise_majority([A, A, B, REJECT, REJECT], k=5)
        assert (result.outcome, result.no_majority, result.counts[REJECT]) == (TIE, True, 2)
        assert pairwise_majority([A, A, A, REJECT, REJECT], k=5).outcome == A

    @pytest.mark.parametrize("k", range(1, 8))
    def test_every_multiset_up_to_k_follows_the_majority_of_k(self, k):
        # The rule written out once more, by counting: a label wins with more than k/2 votes.
        for n in range(0, k + 1):
            for votes in itertools.combinations_with_replacement((A, B, TIE, REJECT), n):
                for rule in ("tie", "mean_score"):
                    result = pairwise_majority(votes, k=k, no_majority_rule=rule)
                    valid = [v for v in votes if v != REJECT]
                    winners = [label for label in (A, B, TIE) if 2 * votes.count(label) > k]
                    if not valid:
                        expected = None
                    elif winners:
                        expected = winners[0]
                    elif rule == "tie":
                        expected = TIE
                    else:
                        score = votes.count(A) - votes.count(B)
                        expected = A if score > 0 else B if score < 0 else TIE
                    assert result.outcome == expected, (k, votes, rule)
                    assert result.no_majority == (bool(valid) and not winners)

    def test_missing_votes_never_make_a_majority(self):
        # A, A, B after two rejections: 2 of 5 is no majority, whatever the votes given.
        assert majority_threshold(k=5, n_votes=3) == 3
        assert pairwise_majority([A, A, B], k=5).outcome == TIE
        assert pairwise_majority([A, A, B, REJECT, REJECT], k=5).outcome == TIE

    def test_all_rejected_has_no_outcome(self):
        result = pairwise_majority([REJECT] * 5, k=5)
        assert (result.outcome, result.no_majority) == (None, False)

    def test_unknown_vote_and_rule_are_refused(self):
        with pytest.raises(ValueError, match="pairwise vote"):
            pairwise_majority(["left"], k=5)
        with pytest.raises(ValueError, match="no_majority_rule"):
            pairwise_majority([A], k=5, no_majority_rule="coin")

    @given(votes5)
    def test_a_label_with_three_votes_always_wins(self, votes):
        result = pairwise_majority(votes, k=5)
        for label in (A, B, TIE):
            if votes.count(label) >= 3:
                assert result.outcome == label and not result.no_majority

    @given(votes5, st.sampled_from(["tie", "mean_score"]))
    def test_swapping_the_images_swaps_the_outcome(self, votes, rule):
        swap = {A: B, B: A, TIE: TIE, REJECT: REJECT, None: None}
        assert pairwise_majority([swap[v] for v in votes], k=5, no_majority_rule=rule).outcome == swap[
            pairwise_majority(votes, k=5, no_majority_rule=rule).outcome
        ]

    @given(votes5, st.randoms())
    def test_order_of_votes_does_not_matter(self, votes, rnd):
        shuffled = list(votes)
        rnd.shuffle(shuffled)
        assert pairwise_majority(shuffled, k=5) == pairwise_majority(votes, k=5)

    @given(votes5)
    def test_no_majority_exactly_when_no_label_reaches_three(self, votes):
        valid = [v for v in votes if v != REJECT]
        result = pairwise_majority(votes, k=5)
        reached = any(valid.count(label) >= 3 for label in (A, B, TIE))
        assert result.no_majority == (bool(valid) and not reached)


class TestClosingEarly:
    """count-partial: an item short of K with n >= ceil(K/2) + 1 counted votes is decided by the majority of n."""

    def test_the_minimum_is_half_of_k_rounded_up_plus_one(self):
        assert [partial_minimum(k=k) for k in range(1, 8)] == [2, 2, 3, 3, 4, 4, 5]

    def test_four_of_five_decide_three_do_not(self):
        assert closing_k(k=5, n_votes=4) == 4
        assert closing_k(k=5, n_votes=3) is None
        # 3 of 5 decides whether counted against 5 or 4; 2-2 has no majority of the 4.
        assert pairwise_majority([A, A, A, B], k=closing_k(k=5, n_votes=4)).outcome == A
        assert pairwise_majority([A, A, B, B], k=closing_k(k=5, n_votes=4)).no_majority

    def test_counted_against_n_not_k(self):
        # K = 7, five votes A, A, A, B, B: 3 of 7 is no majority, 3 of 5 is.
        assert pairwise_majority([A, A, A, B, B], k=7).no_majority
        assert pairwise_majority([A, A, A, B, B], k=closing_k(k=7, n_votes=5)).outcome == A
        assert question_majority(3, k=closing_k(k=7, n_votes=5), n_votes=5)

    @pytest.mark.parametrize("k", range(1, 8))
    def test_every_short_multiset_follows_the_majority_of_its_votes(self, k):
        # Counted out by hand: with n < K counted votes, decided only when n >= ceil(K/2) + 1,
        # and then a label wins with more than n/2 of them.
        for n in range(0, k):
            for votes in itertools.combinations_with_replacement((A, B, TIE), n):
                closing = closing_k(k=k, n_votes=n)
                if n < -(-k // 2) + 1:
                    assert closing is None, (k, votes)
                    continue
                assert closing == n
                result = pairwise_majority(votes, k=closing)
                winners = [label for label in (A, B, TIE) if 2 * votes.count(label) > n]
                assert result.outcome == (winners[0] if winners else TIE), (k, votes)
                assert result.no_majority == (not winners)
                yes = votes.count(A)
                assert question_majority(yes, k=closing, n_votes=n) == (2 * yes > n)


IMAGES = ["i0", "i1", "i2", "i3", "i4"]
bw_vote = st.permutations(IMAGES).map(lambda p: (p[0], p[1]))


class TestBestWorst:
    def test_clear_winner_and_loser(self):
        votes = [("i0", "i4"), ("i0", "i4"), ("i0", "i3"), ("i1", "i4"), ("i2", "i4")]
        result = best_worst_majority(votes, images=IMAGES)
        assert (result.winner, result.loser, result.ambiguous) == ("i0", "i4", False)
        # score(i0) = 3, score(i4) = -4: margin (3 + 4) / (2 * 5)
        assert result.margin == pytest.approx(0.7)

    def test_best_tie_broken_by_best_minus_worst(self):
        # i0 and i1 each have 2 "best"; i1 was also marked worst once, so i0 wins.
        votes = [("i0", "i4"), ("i0", "i4"), ("i1", "i4"), ("i1", "i3"), ("i2", "i1")]
        result = best_worst_majority(votes, images=IMAGES)
        assert (result.winner, result.loser) == ("i0", "i4")

    def test_worst_tie_broken_by_best_minus_worst(self):
        # i3 and i4 each have 2 "worst"; i3 was also marked best once, so i4 is the loser.
        votes = [("i0", "i4"), ("i0", "i4"), ("i0", "i3"), ("i3", "i2"), ("i1", "i3")]
        assert best_worst_majority(votes, images=IMAGES).loser == "i4"

    def test_unresolved_tie_is_ambiguous(self):
        votes = [("i0", "i4"), ("i1", "i4"), ("i0", "i3"), ("i1", "i3")]
        result = best_worst_majority(votes, images=IMAGES)
        assert (result.winner, result.loser, result.ambiguous) == (None, None, True)

    def test_winner_that_is_also_loser_is_ambiguous(self):
        votes = [("i0", "i1"), ("i0", "i2"), ("i1", "i0"), ("i2", "i0"), ("i3", "i4")]
        # i0: 2 best, 2 worst; nobody else has 2 best -> winner i0; worst: i0 has 2, others <= 1.
        assert best_worst_majority(votes, images=IMAGES).ambiguous

    def test_vote_outside_item_is_refused(self):
        with pytest.raises(ValueError, match="outside the item"):
            best_worst_majority([("i9", "i0")], images=IMAGES)
        with pytest.raises(ValueError, match="both best and worst"):
            best_worst_majority([("i0", "i0")], images=IMAGES)

    @given(st.lists(bw_vote, min_size=1, max_size=5))
    def test_winner_has_most_best_votes_and_loser_most_worst(self, votes):
        result = best_worst_majority(votes, images=IMAGES)
        if result.ambiguous:
            assert result.winner is None and result.loser is None
            return
        assert result.winner != result.loser
        assert result.best_counts[result.winner] == max(result.best_counts.values())
        assert result.worst_counts[result.loser] == max(result.worst_counts.values())
        assert 0 <= result.margin <= 1

    @given(st.lists(bw_vote, min_size=1, max_size=5), st.permutations(IMAGES))
    def test_renaming_images_renames_the_result(self, votes, renamed):
        mapping = dict(zip(IMAGES, renamed))
        result = best_worst_majority(votes, images=IMAGES)
        other = best_worst_majority([(mapping[b], mapping[w]) for b, w in votes], images=[mapping[i] for i in IMAGES])
        assert other.ambiguous == result.ambiguous
        if not result.ambiguous:
            assert (other.winner, other.loser) == (mapping[result.winner], mapping[result.loser])


# A small DSG: 1 -> 2 -> 3 and 1 -> 4 (2 and 4 depend on 1, 3 depends on 2).
QUESTIONS = [1, 2, 3, 4]
PARENTS = {2: [1], 3: [2], 4: [1]}
answer_set = st.fixed_dictionaries({q: st.booleans() for q in QUESTIONS})


class TestAlignment:
    @pytest.mark.parametrize("case", DSG_CASES, ids=[case["name"] for case in DSG_CASES])
    def test_dsg_rule_on_the_shared_cases(self, case):
        assert dsg_apply(case["answers"], case["parents"]) == case["expected"]

    def test_dsg_rule_does_not_depend_on_the_order_of_questions(self):
        for case in DSG_CASES:
            reversed_answers = dict(reversed(list(case["answers"].items())))
            assert dsg_apply(reversed_answers, case["parents"]) == case["expected"], case["name"]

    @pytest.mark.parametrize("k", range(1, 8))
    def test_question_majority_needs_a_majority_of_k(self, k):
        for n in range(0, k + 1):
            for yes in range(0, n + 1):
                assert question_majority(yes, k=k, n_votes=n) == (2 * yes > k)

    def test_majority_per_question_then_the_rule(self):
        judgments = [
            {1: True, 2: True, 3: True, 4: False},
            {1: True, 2: True, 3: True, 4: False},
            {1: False, 2: True, 3: True, 4: True},
            {1: True, 2: False, 3: True, 4: True},
            {1: True, 2: True, 3: False, 4: True},
        ]
        result = alignment_majority(judgments, questions=QUESTIONS, parents=PARENTS, k=len(judgments))
        assert result.yes_counts == {1: 4, 2: 4, 3: 4, 4: 3}  # the votes as given
        assert result.answers == {1: True, 2: True, 3: True, 4: True}
        assert result.score == pytest.approx(1.0)

    def test_the_order_matters_and_majority_comes_first(self):
        # Parent 1 / child 2: yes/no, no/yes, yes/yes. Majorities: 1 yes (2 of 3), 2 yes (2 of 3),
        # so 2 stays "yes". Applying the rule to each judgment first would drop the second
        # judgment's "yes" to 2 and make 2 "no" (1 of 3).
        judgments = [{1: True, 2: False}, {1: False, 2: True}, {1: True, 2: True}]
        result = alignment_majority(judgments, questions=[1, 2], parents={2: [1]}, k=3)
        assert result.answers == {1: True, 2: True}
        per_judgment_first = [dsg_apply(j, {2: [1]}) for j in judgments]
        assert sum(j[2] for j in per_judgment_first) * 2 < len(judgments)

    def test_child_is_no_when_the_parents_majority_is_no(self):
        judgments = [{1: False, 2: True}, {1: False, 2: True}, {1: True, 2: True}]
        result = alignment_majority(judgments, questions=[1, 2], parents={2: [1]}, k=3)
        assert result.yes_counts == {1: 1, 2: 3}
        assert result.answers == {1: False, 2: False}
        assert result.score == 0.0

    def test_a_missing_judgment_counts_for_no_yes(self):
        # 2 yes of 3 judgments with K = 5: not a majority of K, so "no".
        judgments = [{1: True, 2: True}, {1: True, 2: True}, {1: False, 2: True}]
        result = alignment_majority(judgments, questions=[1, 2], parents={2: [1]}, k=5)
        assert result.answers == {1: False, 2: False}

    def test_missing_answer_is_refused(self):
        with pytest.raises(ValueError, match="lacks answers"):
            alignment_majority([{1: True}], questions=QUESTIONS, parents=PARENTS, k=5)

    @given(st.lists(answer_set, min_size=1, max_size=5))
    def test_majority_result_respects_the_dsg(self, judgments):
        result = alignment_majority(judgments, questions=QUESTIONS, parents=PARENTS, k=len(judgments))
        for child, parents in PARENTS.items():
            if result.answers[child]:
                assert all(result.answers[p] for p in parents)

    @given(answer_set)
    def test_rule_only_turns_yes_into_no(self, answers):
        applied = dsg_apply(answers, PARENTS)
        assert all(applied[q] <= answers[q] for q in QUESTIONS)
        for child, parents in PARENTS.items():
            if applied[child]:
                assert all(applied[p] for p in parents)
