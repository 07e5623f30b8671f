"""pipeline/split.py: the split of rows without one is seeded, stable under appending, and stratified."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.split import assign_splits, hash_unit

FUNCTIONS = ["f0", "f1", "f2", "f3", "f4", "f5"]
row_strategy = st.tuples(st.text(alphabet="abcdef ", min_size=1, max_size=6),
                         st.lists(st.sampled_from(FUNCTIONS), max_size=2))


def split(rows, fraction=0.1, seed=0, min_requests=3):
    return assign_splits(rows, fraction, seed, min_requests)[0]


@settings(max_examples=200, deadline=None)
@given(st.lists(row_strategy, max_size=40), st.lists(row_strategy, max_size=40),
       st.floats(0.0, 0.9), st.integers(0, 5), st.integers(2, 5))
def test_appending_rows_never_moves_an_existing_row(first, appended, fraction, seed, min_requests):
    before = split(first, fraction, seed, min_requests)
    after = split(first + appended, fraction, seed, min_requests)
    assert after[: len(first)] == before


@settings(max_examples=200, deadline=None)
@given(st.lists(row_strategy, max_size=60), st.floats(0.01, 0.9), st.integers(0, 5), st.integers(2, 5))
def test_every_function_with_enough_requests_is_in_eval_and_no_request_is_in_both(rows, fraction, seed, min_requests):
    splits = split(rows, fraction, seed, min_requests)
    by_request = {}
    for (request, _), s in zip(rows, splits):
        by_request.setdefault(request, set()).add(s)
    assert all(len(s) == 1 for s in by_request.values())  # no leakage by construction
    leaders = {}
    for request, functions in rows:
        if request not in leaders:
            leaders[request] = functions or [""]
    for name in {f for fs in leaders.values() for f in fs}:
        requests = [r for r, fs in leaders.items() if name in fs]
        if len(requests) >= min_requests:
            assert any(by_request[r] == {"eval"} for r in requests), name


def test_a_function_whose_rows_all_hash_to_train_still_gets_one_eval_row():
    requests = [f"turn on light {i}" for i in range(200) if hash_unit(f"turn on light {i}", 0) >= 0.1][:5]
    assert len(requests) == 5  # all hash to train on their own
    splits, forced = assign_splits([(r, ["turn_on_light"]) for r in requests], 0.1, 0, 3)
    assert splits == ["train", "train", "eval", "train", "train"] and forced == 1
    # two requests only: fewer than min_requests, nothing forced
    assert assign_splits([(r, ["turn_on_light"]) for r in requests[:2]], 0.1, 0, 3) == (["train", "train"], 0)


def test_rows_without_a_call_are_a_stratum_too():
    requests = [f"thanks {i}" for i in range(200) if hash_unit(f"thanks {i}", 0) >= 0.1][:3]
    assert split([(r, []) for r in requests]) == ["train", "train", "eval"]


def test_the_hash_rule_alone_follows_the_fraction_and_the_seed():
    rows = [(f"request {i}", [f"fn{i % 500}"]) for i in range(5000)]
    by_hash = assign_splits(rows, 0.1, 0, 10**9)[0]  # stratification never triggers
    assert 0.08 < by_hash.count("eval") / len(rows) < 0.12
    assert assign_splits(rows, 0.1, 1, 10**9)[0] != by_hash  # another seed, another split
    assert assign_splits(rows, 0.1, 0, 10**9)[0] == by_hash  # the same seed, the same split
    assert split(rows, fraction=0.0) == ["train"] * len(rows)


def test_a_repeat_follows_its_request_even_when_it_calls_another_function():
    rows = [("a", ["f"]), ("b", ["f"]), ("c", ["f"]), ("c", ["g"]), ("C", ["g"])]
    splits = split(rows, fraction=1e-9)
    assert splits[2] == splits[3] == "eval" and splits[:2] == ["train", "train"]
