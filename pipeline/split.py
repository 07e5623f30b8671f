"""The split rule for rows that carry none: seeded, stable under appending, stratified by function.

    from pipeline.split import assign_splits
    splits, forced = assign_splits([(request_key, ["send_email"]), ...], eval_fraction=0.1, seed=0, min_requests=3)

The rule (rows are taken in file order; a row's *request* is its user text, case and spacing
folded, `pipeline.rows.request_key`):

1. Rows with the same request share one split, decided at the request's first row. So the
   same request never lands in both splits (no leakage by construction), and a repeat of a
   request follows it.
2. A request goes to eval when `u < eval_fraction`, where `u` is the first 8 bytes of
   sha256("<seed>\\0<request>") read as a fraction of 2**64: a property of the request alone.
3. Stratification: for each function, count the distinct requests (their first rows) that call
   it, in file order. When a function's `min_requests`-th request is reached and none of its
   requests so far is in eval (by step 2 or by an earlier step 3), that request goes to eval.
   (Rows with no call count as one "function", so text answers are in eval too.)

So a request's split depends only on its first row and the rows before it: appending rows (to
the end of a file, or as a file that sorts after the others) never moves an existing row, and
every function with at least `min_requests` distinct requests has one in eval, whatever its
requests hash to. A function with fewer requests than that may have none in eval (it is listed
by the hygiene report). Step 3 adds at most one eval request per function, so the eval share
can exceed `eval_fraction` when there are many functions with few rows each. `eval_fraction: 0`
sends every row without a split to train (no step 3). Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

NO_CALL = ""  # the stratum of rows whose answer is text


def hash_unit(request: str, seed: int) -> float:
    """A request's place in [0, 1): the first 8 bytes of sha256("<seed>\\0<request>") over 2**64."""
    digest = hashlib.sha256(f"{seed}\0{request}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(rows: Iterable[tuple[str, Sequence[str]]], eval_fraction: float, seed: int,
                  min_requests: int) -> tuple[list[str], int]:
    """("train"/"eval" per row, in order; how many requests step 3 moved to eval) for (request, functions) rows."""
    rows = list(rows)
    in_eval: dict[str, bool] = {}
    counted: dict[str, list[str]] = {}  # function -> its first min_requests requests
    forced = 0
    for request, functions in rows:
        if request in in_eval:
            continue  # a repeat follows the request's first row
        is_eval = hash_unit(request, seed) < eval_fraction
        if eval_fraction > 0:
            for name in dict.fromkeys(functions or [NO_CALL]):
                seen = counted.setdefault(name, [])
                if len(seen) >= min_requests:
                    continue
                seen.append(request)
                if len(seen) == min_requests and not is_eval and not any(in_eval.get(r) for r in seen[:-1]):
                    is_eval = True
                    forced += 1
        in_eval[request] = is_eval
    return ["eval" if in_eval[request] else "train" for request, _ in rows], forced
