"""pipeline/stats.py against figures computed by hand and published ones (pure: no model, no I/O).

Published: Fagerland, Lydersen & Laake, Statistical Analysis of Contingency Tables (2017), chapter 8,
the Cavo et al. (2012) table (complete response before / after consolidation therapy): 59 both, 6
before only, 16 after only, 80 neither; Newcombe's square-and-add interval -0.1186 to -0.0046 for
before - after, exact conditional McNemar P = 0.052479. The same book's degenerate 1 / 0 / 0 / 1 table
gives -0.5734 to 0.5734.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.stats import (
    accuracy_figures,
    mcnemar_exact,
    paired_correlation,
    paired_difference,
    seeded_difference,
    wilson_interval,
)


def table(both: int, fixed: int, broken: int, neither: int) -> tuple[list[bool], list[bool]]:
    """(A's verdicts, B's verdicts) with that many rows of each kind: fixed = A wrong and B right."""
    a = [True] * both + [False] * fixed + [True] * broken + [False] * neither
    b = [True] * both + [True] * fixed + [False] * broken + [False] * neither
    return a, b


# ---------------------------------------------------------------- Wilson


@pytest.mark.parametrize("k, n, low, high", [
    (89, 150, 0.513347, 0.668659),  # p = 0.5933; by hand: centre 0.591003, half width 0.077656
    (0, 10, 0.0, 0.277533),  # upper = z^2 / (n + z^2) = 3.841459 / 13.841459
    (10, 10, 0.722467, 1.0),  # lower = n / (n + z^2)
    (1, 2, 0.094531, 0.905469),  # centre 0.5, half = z sqrt(1/8 + z^2/16) / (1 + z^2/2)
])
def test_wilson_interval_matches_hand_computed_values(k, n, low, high):
    got = wilson_interval(k, n)
    assert got == pytest.approx((low, high), abs=1e-6)


def test_wilson_interval_of_nothing_is_everything_and_bad_counts_are_refused():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="successes must be in"):
        wilson_interval(3, 2)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 400), data=st.data())
def test_wilson_interval_holds_the_estimate_inside_0_1(n, data):
    k = data.draw(st.integers(0, n))
    low, high = wilson_interval(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0
    if n >= 2 and 0 < k < n:
        # a proportion measured on 4x the rows has an interval about half as wide
        wide, narrow = wilson_interval(k, n), wilson_interval(4 * k, 4 * n)
        assert narrow[1] - narrow[0] < wide[1] - wide[0]


# ---------------------------------------------------------------- McNemar


@pytest.mark.parametrize("fixed, broken, p", [
    (16, 6, 0.052479),  # 2 * (1 + 22 + 231 + 1540 + 7315 + 26334 + 74613) / 2^22 = 2 * 110056 / 4194304
    (5, 0, 0.0625),  # 2 / 2^5
    (0, 5, 0.0625),  # two-sided: the same either way
    (3, 3, 1.0),  # a tie: capped at 1
    (1, 0, 1.0),  # one discordant row proves nothing
    (0, 0, 1.0),  # no discordant row at all
    (16, 4, 0.011818),  # 2 * (1 + 20 + 190 + 1140 + 4845) / 2^20
])
def test_mcnemar_exact_matches_hand_computed_values(fixed, broken, p):
    assert mcnemar_exact(fixed, broken) == pytest.approx(p, abs=5e-7)


# ---------------------------------------------------------------- Newcombe's paired interval


def test_paired_difference_matches_the_published_cavo_example():
    # B - A with A = after, B = before reproduces the book's before - after: -0.0621 (-0.1186 to -0.0046)
    before, after = table(59, 0, 0, 80)
    before += [True] * 6 + [False] * 16
    after += [False] * 6 + [True] * 16
    d = paired_difference(after, before)
    assert (d.n, d.both, d.neither) == (161, 59, 80)
    assert (d.fixed, d.broken) == (6, 16)
    assert d.difference == pytest.approx(-10 / 161)
    assert (d.ci_low, d.ci_high) == pytest.approx((-0.1186, -0.0046), abs=5e-5)
    assert d.p_value == pytest.approx(0.052479, abs=5e-7)
    assert d.accuracy_a == pytest.approx(75 / 161) and d.accuracy_b == pytest.approx(65 / 161)
    # and the mirror image: A = before gives +0.0621 (0.0046 to 0.1186)
    m = paired_difference(before, after)
    assert (m.ci_low, m.ci_high) == pytest.approx((0.0046, 0.1186), abs=5e-5)


def test_two_sides_that_agree_on_every_row_still_get_an_interval():
    # The book's 1 / 0 / 0 / 1 table: without Newcombe's continuity correction phi = 1 and the
    # interval collapses to [0, 0], a certainty two rows cannot give.
    a, b = table(1, 0, 0, 1)
    d = paired_difference(a, b)
    assert d.difference == 0.0 and (d.ci_low, d.ci_high) == pytest.approx((-0.5734, 0.5734), abs=5e-5)
    # 40 rows both right, 8 both wrong: still an interval around 0 of a few points, not none
    d = paired_difference(*table(40, 0, 0, 8))
    assert d.ci_low < -0.03 and d.ci_high > 0.03


def test_paired_correlation_by_hand():
    # A = 59 * 80 - 16 * 6 = 4624 > n/2 = 80.5: (4624 - 80.5) / sqrt(65 * 96 * 75 * 86)
    assert paired_correlation(59, 16, 6, 80) == pytest.approx(4543.5 / math.sqrt(65 * 96 * 75 * 86))
    assert paired_correlation(1, 0, 0, 1) == 0.0  # 0 <= A = 1 <= n/2 = 1
    assert paired_correlation(2, 5, 5, 2) == pytest.approx((4 - 25) / math.sqrt(7 * 7 * 7 * 7))  # A < 0: as is
    assert paired_correlation(10, 0, 0, 0) == 0.0  # an empty margin


def test_paired_difference_counts_fixed_and_broken_rows():
    a = [True, True, False, False, True, False]
    b = [True, False, True, True, True, False]
    d = paired_difference(a, b)
    assert (d.n, d.both, d.fixed, d.broken, d.neither) == (6, 2, 2, 1, 1)
    assert d.difference == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match="the same rows"):
        paired_difference([True], [True, False])
    empty = paired_difference([], [])
    assert (empty.n, empty.ci_low, empty.ci_high, empty.p_value) == (0, -1.0, 1.0, 1.0)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=300))
def test_paired_interval_holds_the_difference_and_stays_in_range(pairs):
    a, b = [x for x, _ in pairs], [y for _, y in pairs]
    d = paired_difference(a, b)
    assert -1.0 <= d.ci_low <= d.difference <= d.ci_high <= 1.0
    assert d.ci_high - d.ci_low > 0  # some uncertainty is always left
    assert 0.0 < d.p_value <= 1.0
    swapped = paired_difference(b, a)  # A and B exchanged: the mirror image
    assert (swapped.ci_low, swapped.ci_high) == pytest.approx((-d.ci_high, -d.ci_low), abs=1e-12)


# ---------------------------------------------------------------- verdicts


def test_verdict_rule():
    better = paired_difference(*table(20, 16, 4, 8))  # +25 points of 48, p = 0.0118
    assert better.ci_low > 0 and better.verdict().startswith("better: +25.0 points, 95% interval [+")
    worse = paired_difference(*table(20, 4, 16, 8))
    assert worse.ci_high < 0 and worse.verdict().startswith("worse: -25.0 points")
    noise = paired_difference(*table(28, 2, 0, 18))
    assert noise.verdict().startswith("within noise at n = 48 (+4.2 points, 95% interval [")
    assert "p = 0.5" in noise.verdict()
    assert paired_difference([], []).verdict() == "no rows in common: nothing to compare"


def test_an_interval_clear_of_zero_is_not_enough_without_mcnemar():
    # 10 fixed, 2 broken on 12 rows: Newcombe's interval lies above 0 but p = 0.039 -> better at 0.05,
    # within noise at 0.01: both conditions count
    d = paired_difference(*table(0, 10, 2, 0))
    assert d.ci_low > 0 and d.p_value == pytest.approx(2 * (1 + 12 + 66) / 2**12)
    assert d.verdict().startswith("better") and d.verdict(alpha=0.01).startswith("within noise at n = 12")


# ---------------------------------------------------------------- several seeds per side


def test_seeded_difference_by_hand():
    a = [[True, False, True, False], [True, True, False, False]]  # per row: 1, 1/2, 1/2, 0
    b = [[True, True, True, False]]  # per row: 1, 1, 1, 0
    d = seeded_difference(a, b)
    # differences 0, 1/2, 1/2, 0: mean 1/4, sd sqrt((4 * 1/16) / 3), half width 1.96 * sd / 2
    half = 1.959964 * math.sqrt(0.25 / 3) / 2
    assert (d.n, d.runs_a, d.runs_b) == (4, 2, 1)
    assert (d.accuracy_a, d.accuracy_b, d.difference) == pytest.approx((0.5, 0.75, 0.25))
    assert (d.ci_low, d.ci_high) == pytest.approx((0.25 - half, 0.25 + half), abs=1e-6)


def test_seeded_difference_refuses_runs_on_different_rows():
    with pytest.raises(ValueError, match="the same rows"):
        seeded_difference([[True, False]], [[True]])
    with pytest.raises(ValueError, match="at least one run"):
        seeded_difference([], [[True]])


# ---------------------------------------------------------------- metrics keys


def test_accuracy_figures_are_flat_keys_with_n_and_interval():
    figures = accuracy_figures("exact_match_finetuned", [True] * 89 + [False] * 61)
    assert list(figures) == ["exact_match_finetuned", "exact_match_finetuned_n", "exact_match_finetuned_ci_low",
                             "exact_match_finetuned_ci_high"]
    assert figures["exact_match_finetuned"] == pytest.approx(89 / 150) and figures["exact_match_finetuned_n"] == 150
    assert (figures["exact_match_finetuned_ci_low"], figures["exact_match_finetuned_ci_high"]) == pytest.approx(
        (0.513347, 0.668659), abs=1e-6)
    none = accuracy_figures("no_call_accuracy_base", [])
    assert none == {"no_call_accuracy_base": 0.0, "no_call_accuracy_base_n": 0, "no_call_accuracy_base_ci_low": 0.0,
                    "no_call_accuracy_base_ci_high": 1.0}
