"""Searches that bracket their choice: several search seeds per candidate, and grids extended
where the choice sits at an end.

* ``search.seeds``: every candidate trains with each; its score is the mean validation score
  over them (a single search seed scores a candidate with the noise of one seed, as large as the
  gaps between candidates).
* ``search.extend: N``: where a method's candidates vary one numeric setting (the same
  overrides but one key, e.g. ``distill.loss.temperature=2 / 4 / 8``) and the choice is the
  lowest or highest value, the grid is continued one step beyond it - geometrically (8 -> 16,
  2 -> 1) where every value is positive, else by the last step - and searched again, at most N
  steps per search, until the choice is interior. The added candidates are tagged after the
  declared ones (``c3``, ``c4``, ...), so the declared candidates' records keep their names.
"""

from __future__ import annotations

import math
from typing import Any


def search_seeds(study: Any) -> list[int]:
    """The seeds every search candidate is trained with: ``search.seeds``, else ``search.seed``
    alone."""
    return list(study.search.seeds or [study.search.seed])


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def one_knob(candidates: list[list[str]]) -> str | None:
    """The one override key whose numeric value the candidates vary while every other override
    is the same; None for any other kind of grid (two knobs, a list, a missing key)."""
    parsed = [dict(o.split("=", 1) for o in c if "=" in o) for c in candidates]
    if len(parsed) < 2 or any(len(p) != len(c) for p, c in zip(parsed, candidates,
                                                                   strict=True)):
        return None
    keys = set(parsed[0])
    if any(set(p) != keys for p in parsed):
        return None
    varied = [k for k in parsed[0] if len({p[k] for p in parsed}) > 1]
    if len(varied) != 1 or any(_number(p[varied[0]]) is None for p in parsed):
        return None
    return varied[0]


def _shown(value: float, like: list[str]) -> str:
    """``value`` written as the grid writes its values (integers stay integers)."""
    if all(v.lstrip("-").isdigit() for v in like) and value == round(value):
        return str(int(round(value)))
    return f"{value:.6g}"


def next_step(candidates: list[list[str]], chosen: int) -> list[str] | None:
    """The candidate one step beyond the grid's end the ``chosen`` candidate sits at (its
    overrides with the knob continued); None where the choice is interior or the grid is not
    one numeric knob."""
    key = one_knob(candidates)
    if key is None:
        return None
    texts = [dict(o.split("=", 1) for o in c)[key] for c in candidates]
    values = [float(t) for t in texts]
    grid = sorted(set(values))
    value = values[chosen]
    if grid[0] < value < grid[-1]:
        return None
    if value == grid[-1]:
        inner = grid[-2]
    else:
        inner = grid[1]
    if all(v > 0 for v in grid):
        beyond = value * (value / inner)
    else:
        beyond = value + (value - inner)
    return [f"{key}={_shown(beyond, texts)}" if o.split("=", 1)[0] == key else o
            for o in candidates[chosen]]


def extension(candidates: list[list[str]], chosen: int, steps: int) -> list[str] | None:
    """The next candidate to search, or None: the choice is interior, the grid is not one
    numeric knob, no ``steps`` are left (``search.extend`` less the steps already added), or
    the step is already a candidate."""
    if steps <= 0:
        return None
    found = next_step(candidates, chosen)
    return None if found is None or found in candidates else found


def mean_score(values: list[float]) -> float:
    """A candidate's score over its search seeds (NaN where one diverged: never chosen)."""
    return sum(values) / len(values) if values and all(math.isfinite(v) for v in values) \
        else math.nan


def extend_searches(runner: Any, found: list[Any], train: bool) -> list[Any]:
    """``search.extend``'s rounds: while a finished search chose an end of its one-knob numeric
    grid (and has steps left), search the next step beyond it; the results of the added
    candidates (merged per candidate). ``runner``: a :class:`~horkd.study.runner.Study`."""
    from horkd.study.jobs import merge_seeds

    study = runner.study
    if not study.search.extend:
        return []
    added: list[Any] = []
    while True:
        jobs = []
        for (regime, method), results in _searches(found + added).items():
            if any(s not in r.records for r in results for s in search_seeds(study)):
                continue  # unfinished: extended (or chosen) once every seed is recorded
            candidates = runner.candidates(regime, method)
            scores = {int(r.job.tag[1:]): mean_score([r.records[s].val
                                                      for s in search_seeds(study)])
                      for r in results}
            best = max(sorted(scores), key=lambda i: (scores[i] if math.isfinite(scores[i])
                                                      else -math.inf))
            steps = study.search.extend - len(runner.extended.get((regime, method), []))
            step = extension(candidates, best, steps)
            if step is not None:
                runner.extended.setdefault((regime, method), []).append(step)
                runner.log(f"[{regime}] {method}: chose an end of its grid "
                           f"({'; '.join(candidates[best])}): searching {'; '.join(step)} too")
                jobs += runner.candidate_jobs(regime, method, len(candidates))
        if not jobs:
            return added
        added += merge_seeds(runner.run(jobs, train))


def _searches(results: list[Any]) -> dict[tuple[str, str], list[Any]]:
    """The search results by (regime, method)."""
    out: dict[tuple[str, str], list[Any]] = {}
    for res in results:
        out.setdefault((res.job.regime, res.job.method), []).append(res)
    return out
