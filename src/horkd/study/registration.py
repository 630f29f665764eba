"""Pre-registration of a confirmatory regime: its design is written down before its first run
and cannot change once runs are recorded.

A regime marked ``role: confirmatory`` gets, when the study first trains it, a small file beside
its records (``<records>/<regime>/registration.json``): the design (the experiment its runs
start from with the regime's overrides resolved, its methods, their search candidates, the
final and search seeds, the teachers and how the seeds are spread over them, the declared
comparisons and margin, the targets set on it and the study's CPU budget), its digest, the date and the git commit. Every later invocation
compares the study file's design with it: a change while runs are recorded is refused in one
line naming what changed. ``horkd study FILE --register REGIME`` starts a new registration
explicitly (the old file is kept as ``registration-<n>.json``).
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from horkd.checkpoint import git_sha, write_json
from horkd.run_dir import changed_keys, settings_digest

FILE = "registration.json"


class RegistrationError(ValueError):
    """A confirmatory regime whose design differs from the one registered before its runs."""


def design(runner: Any, regime: str) -> dict[str, Any]:
    """What a confirmatory regime fixes before its first run (``runner``: a
    :class:`~horkd.study.runner.Study`)."""
    from horkd.config import config_from_dict
    from horkd.study.config import regime_comparisons, regime_margin, searched
    from horkd.study.search_rounds import search_seeds

    study = runner.study
    r = study.regimes[regime]
    # every setting, defaults included: a later horkd that changes a default changes the
    # experiment, and is refused as any other change is (a setting that did not exist when the
    # design was registered is left out of the comparison: see :func:`_changes`)
    cfg = config_from_dict(dict(study.base), list(r.overrides)).model_dump(mode="json")
    for key in ("name", "output_dir", "seeds", "methods"):
        cfg.pop(key, None)
    source = r.choices_from or regime
    methods = study.regime_methods(regime)
    raw = study.model_dump(mode="json")
    teachers = {}
    for name, seed in runner.teachers.slots(regime):
        teacher = runner.teachers.config(name, seed).model_dump(mode="json")
        teacher.pop("output_dir", None)
        teachers[f"{name}/seed{seed}"] = teacher
    return {
        "experiment": cfg,
        "overrides": list(r.overrides),
        "methods": methods,
        "candidates": {m: study.candidates(source, m) for m in methods
                       if searched(m) and m in study.search.candidates},
        "candidates_from": source,
        "seeds": list(r.seeds or study.seeds),
        "search": {"seeds": search_seeds(study), "extend": study.search.extend},
        "teachers": teachers,
        "teacher_per_seed": r.teacher_per_seed,
        "comparisons": [list(p) for p in regime_comparisons(raw, regime)],
        "margin": regime_margin(raw, regime),
        # the results it sets out to reach are fixed before the first run too: each target
        # field by field (a field a later horkd adds is no change; the claim's words may be
        # mended), by its place in the study file
        "targets": {str(i): {k: v for k, v in t.items() if k != "claim"}
                    for i, t in enumerate(raw.get("targets") or []) if t["regime"] == regime},
        "budget_cpu_hours": raw.get("budget_cpu_hours"),
    }


#: Design keys compared even against a registration made before they existed: a target or a
#: budget added once scores are recorded is the forking path registration is there to stop.
ALWAYS_COMPARED = ("targets", "budget_cpu_hours")


def registered(book: Any, regime: str) -> dict[str, Any] | None:
    import json

    path = book.folder / regime / FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _has_runs(book: Any, regime: str) -> bool:
    folder = book.folder / regime
    return folder.is_dir() and any(folder.glob("*/*/*-seed*.json"))


def register(runner: Any, regime: str, log: Any = print) -> Path:
    """Write the regime's registration (a former one kept as ``registration-<n>.json``)."""
    found = design(runner, regime)
    path = runner.book.folder / regime / FILE
    if path.is_file():
        n = 1 + len(list(path.parent.glob("registration-*.json")))
        path.rename(path.with_name(f"registration-{n}.json"))
    entry = {"regime": regime, "digest": settings_digest(found),
             "date": datetime.date.today().isoformat(), "git_commit": git_sha(),
             "design": found}
    write_json(path, entry, "a confirmatory regime's registration")
    log(f"[{regime}] confirmatory: its design is registered ({entry['digest']}, "
        f"{entry['date']}, commit {entry['git_commit'] or 'unknown'}) in {path}")
    return path


def check(runner: Any, train: bool, log: Any = print) -> dict[str, dict[str, Any]]:
    """Each confirmatory regime's registration, checked against the study file: registered now
    where it has none and no run yet (when training); refused in one line where its design
    changed with runs recorded, or where runs were recorded without a registration. Returns
    ``{regime: {digest, date, git_commit}}`` for the page."""
    out = {}
    for regime, r in runner.study.regimes.items():
        if r.role != "confirmatory":
            continue
        entry = registered(runner.book, regime)
        found = design(runner, regime)
        runs = _has_runs(runner.book, regime)
        if entry is None:
            if runs:
                raise RegistrationError(
                    f"regimes.{regime} is confirmatory but its recorded runs have no "
                    "registration: its design was not registered before its first run; mark it "
                    f"exploratory, or start a registration with --register {regime}")
            if train:
                register(runner, regime, log)
                entry = registered(runner.book, regime)
        elif changes := _changes(entry["design"], found):
            what = ", ".join(changes)
            if runs:
                raise RegistrationError(
                    f"regimes.{regime} is confirmatory and registered on {entry['date']} "
                    f"(commit {entry.get('git_commit') or 'unknown'}); with runs recorded its "
                    f"design cannot change, but {what} did: restore it, or start a new "
                    f"registration with --register {regime}")
            if train:  # nothing ran under the old design: register the new one
                register(runner, regime, log)
                entry = registered(runner.book, regime)
        if entry is not None:
            out[regime] = {k: entry.get(k) for k in ("digest", "date", "git_commit")}
    return out


def _changes(registered_design: dict[str, Any], found: dict[str, Any]) -> list[str]:
    """The settings whose value differs from the registered design's, leaving out those that
    did not exist when it was registered (a setting a later horkd adds is not a change to the
    design; a changed default of an existing one is) - except a target or a budget set on a
    design registered before horkd kept them (ALWAYS_COMPARED)."""
    from horkd.run_dir import flat_settings

    old, new = flat_settings(registered_design), flat_settings(found)

    def added_since(key: str) -> bool:  # a target or budget where none could be registered
        top = key.split(".")[0]
        return top in ALWAYS_COMPARED and top not in registered_design and new.get(key) is not None

    return [k for k in changed_keys(registered_design, found) if k in old or added_since(k)]
