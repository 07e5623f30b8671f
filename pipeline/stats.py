"""Uncertainty of accuracy figures (pure, stdlib only): what tells a gain from noise.

    from pipeline.stats import wilson_interval, paired_difference, mcnemar_exact
    wilson_interval(89, 150)              # (0.513, 0.669): 95% interval of 89/150 correct
    paired_difference(a, b)               # PairedDifference: b - a on the same rows, its 95% interval, McNemar p

- `wilson_interval`: Wilson's score interval for a proportion (good coverage at small n and near 0 or 1,
  where the normal approximation gives impossible bounds).
- `paired_difference`: the difference of two accuracies measured on the same rows (two models, or two
  revisions of one), with Newcombe's hybrid score interval for paired proportions (his method 10:
  Wilson intervals of both accuracies combined through the correlation of the paired outcomes, that
  correlation continuity-corrected as Newcombe defines it), and the exact McNemar test (a two-sided
  binomial test on the discordant rows). Its `verdict` is the one line `make report` prints.
- `seeded_difference`: the same comparison when each side was run with several seeds (training runs):
  each row's outcome is its share of right runs, and the interval is a normal approximation over rows
  of the per-row differences (rows are what is sampled; the spread between seeds is reported apart).
- `accuracy_figures`: the flat metrics keys of one accuracy (`<name>`, `_n`, `_ci_low`, `_ci_high`).

Checked against published figures (tests/test_stats.py): Fagerland, Lydersen & Laake, *Statistical
Analysis of Contingency Tables* (2017), chapter 8, Cavo et al. (2012): 59 / 6 / 16 / 80 pairs give a
Newcombe interval of -0.1186 to -0.0046 and an exact McNemar p of 0.052479.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

Z95 = 1.959963984540054  # the 97.5% point of the standard normal


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of successes/n; (0.0, 1.0) when n is 0 (nothing is known)."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, {n}], got {successes}")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # at 0 or n successes the bound is 0 or 1 exactly (rounding would leave it 1e-17 off the estimate)
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def mcnemar_exact(fixed: int, broken: int) -> float:
    """Two-sided exact McNemar p-value: under "no difference", each discordant row is a fair coin."""
    discordant = fixed + broken
    if discordant == 0:
        return 1.0
    k = min(fixed, broken)
    tail = sum(math.comb(discordant, i) for i in range(k + 1)) / 2**discordant
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class PairedDifference:
    """Accuracy of B minus accuracy of A over the same n rows."""

    n: int
    both: int  # rows both got right
    fixed: int  # rows A got wrong and B right
    broken: int  # rows A got right and B wrong
    neither: int
    difference: float  # (fixed - broken) / n
    ci_low: float
    ci_high: float
    p_value: float  # exact McNemar

    @property
    def accuracy_a(self) -> float:
        return (self.both + self.broken) / self.n if self.n else 0.0

    @property
    def accuracy_b(self) -> float:
        return (self.both + self.fixed) / self.n if self.n else 0.0

    def verdict(self, alpha: float = 0.05) -> str:
        """One line a reviewer can act on. The rule: "better" (or "worse") only when the 95% interval of
        the difference lies wholly above (below) 0 and the McNemar p-value is below `alpha`; otherwise
        "within noise at n = N" (the interval covers 0, or p >= alpha), with the figures either way."""
        if self.n == 0:
            return "no rows in common: nothing to compare"
        if self.ci_low > 0 and self.p_value < alpha:
            return f"better: {100 * self.difference:+.1f} points, 95% interval [{100 * self.ci_low:+.1f}, {100 * self.ci_high:+.1f}], p = {self.p_value:.3g}"
        if self.ci_high < 0 and self.p_value < alpha:
            return f"worse: {100 * self.difference:+.1f} points, 95% interval [{100 * self.ci_low:+.1f}, {100 * self.ci_high:+.1f}], p = {self.p_value:.3g}"
        return f"within noise at n = {self.n} ({100 * self.difference:+.1f} points, 95% interval [{100 * self.ci_low:+.1f}, {100 * self.ci_high:+.1f}], p = {self.p_value:.3g})"


def paired_correlation(both: int, fixed: int, broken: int, neither: int) -> float:
    """Newcombe's continuity-corrected phi of a paired 2x2 table (method 10): with A = both * neither -
    fixed * broken, (A - n/2) / sqrt(margins) when A > n/2, 0 when 0 <= A <= n/2, A / sqrt(margins) when
    A < 0; 0 when a margin is empty. Uncorrected, two sides that agree on every row get phi = 1 and an
    interval of zero width whatever n is."""
    n = both + fixed + broken + neither
    margins = (both + broken) * (fixed + neither) * (both + fixed) * (broken + neither)
    if not margins:
        return 0.0
    a = both * neither - fixed * broken
    if a > n / 2:
        a -= n / 2
    elif a >= 0:
        a = 0
    return a / math.sqrt(margins)


def paired_difference(a: Sequence[bool], b: Sequence[bool], z: float = Z95) -> PairedDifference:
    """B's accuracy minus A's on the same rows (a[i] and b[i] are the verdicts of row i), with Newcombe's
    method-10 interval and the exact McNemar p-value."""
    if len(a) != len(b):
        raise ValueError(f"paired verdicts need the same rows: {len(a)} vs {len(b)}")
    n = len(a)
    both = sum(1 for x, y in zip(a, b) if x and y)
    broken = sum(1 for x, y in zip(a, b) if x and not y)
    fixed = sum(1 for x, y in zip(a, b) if y and not x)
    neither = n - both - broken - fixed
    if n == 0:
        return PairedDifference(0, 0, 0, 0, 0, 0.0, -1.0, 1.0, 1.0)
    pa, pb = (both + broken) / n, (both + fixed) / n
    la, ua = wilson_interval(both + broken, n, z)
    lb, ub = wilson_interval(both + fixed, n, z)
    phi = paired_correlation(both, fixed, broken, neither)
    difference = pb - pa
    low = difference - math.sqrt(max(0.0, (pb - lb) ** 2 - 2 * phi * (pb - lb) * (ua - pa) + (ua - pa) ** 2))
    high = difference + math.sqrt(max(0.0, (ub - pb) ** 2 - 2 * phi * (ub - pb) * (pa - la) + (pa - la) ** 2))
    return PairedDifference(n, both, fixed, broken, neither, difference, max(-1.0, low), min(1.0, high),
                            mcnemar_exact(fixed, broken))


def accuracy_figures(name: str, hits: Sequence[bool]) -> dict[str, float | int]:
    """Flat metrics for one accuracy: `<name>`, `<name>_n`, `<name>_ci_low`, `<name>_ci_high` (Wilson 95%)."""
    n, k = len(hits), sum(bool(h) for h in hits)
    low, high = wilson_interval(k, n)
    return {name: k / n if n else 0.0, f"{name}_n": n, f"{name}_ci_low": low, f"{name}_ci_high": high}


@dataclass(frozen=True)
class SeededDifference:
    """B minus A on the same n rows when each side ran several times (seeds): row i's outcome on a side
    is the share of that side's runs that got it right."""

    n: int
    runs_a: int
    runs_b: int
    accuracy_a: float  # mean over runs and rows
    accuracy_b: float
    difference: float  # accuracy_b - accuracy_a
    ci_low: float
    ci_high: float


def seeded_difference(a: Sequence[Sequence[bool]], b: Sequence[Sequence[bool]], z: float = Z95) -> SeededDifference:
    """`a[run][row]`, `b[run][row]`: the verdicts of each run of A and B on the same rows, in the same order.

    The interval is d +- z * s / sqrt(n) over the per-row differences d_i = mean_b(i) - mean_a(i) (s their
    sample standard deviation): a normal approximation over rows, too narrow below about 30 rows, which
    takes row-to-row variation into account but treats the runs as given (report their spread beside it).
    """
    if not a or not b:
        raise ValueError("each side needs at least one run")
    n = len(a[0])
    if any(len(run) != n for run in [*a, *b]):
        raise ValueError(f"every run needs verdicts on the same rows: {sorted({len(r) for r in [*a, *b]})} rows")
    if n == 0:
        return SeededDifference(0, len(a), len(b), 0.0, 0.0, 0.0, -1.0, 1.0)
    share_a = [sum(bool(run[i]) for run in a) / len(a) for i in range(n)]
    share_b = [sum(bool(run[i]) for run in b) / len(b) for i in range(n)]
    diffs = [y - x for x, y in zip(share_a, share_b)]
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else 0.0
    half = z * sd / math.sqrt(n) if n > 1 else 2.0  # one row says nothing about the spread
    return SeededDifference(n, len(a), len(b), sum(share_a) / n, sum(share_b) / n, mean,
                            max(-1.0, mean - half), min(1.0, mean + half))


def describe_accuracy(rate: float | None, n: int | None) -> str:
    """'78.0% (n = 150, 95% interval 70.7-84.0%)' from an accuracy and its row count ('n/a' without them)."""
    if not isinstance(rate, (int, float)) or not n:
        return "n/a"
    low, high = wilson_interval(round(rate * n), n)
    return f"{100 * rate:.1f}% (n = {n}, 95% interval {100 * low:.1f}-{100 * high:.1f}%)"
