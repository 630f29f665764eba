"""A study: several regimes x methods x seeds, hyper-parameters searched on validation data.

A study file names the teachers (experiment configs trained once and shared), a base experiment
every student run starts from, the regimes (override lists on top of the base), the per-method
search candidates (override lists; every method gets the same number: the same search budget) and
the seeds of the final runs. See ``configs/study/fashion_mnist.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from horkd.config import (
    ConfigError,
    DataConfig,
    config_from_dict,
    format_validation_error,
    load_config,
    override_of,
    problem_line,
    read_yaml_mapping,
)
from horkd.data.validation_source import held_apart_differences, holds_validation_apart
from horkd.study.executors import ExecutorConfig


def _registered_baselines() -> list[str]:
    from horkd.methods import methods_in

    return methods_in("baseline")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class RegimeConfig(_Strict):
    """One setting every method is compared in, e.g. LR 7px, few labels, retrieval."""

    description: str = ""
    teacher: str | list[str] = Field(
        description="a key of the study's `teachers`, or several: the final seeds are spread "
        "over them (and over `teacher_seeds`) round-robin by seed index, so the intervals "
        "include the teachers' variation as sampled (the seeds are still analysed as "
        "independent pairs)")
    teacher_seeds: list[int] | None = Field(
        None, min_length=1, description="train each teacher with these seeds (one teacher "
        "each; null: its config's first seed): teachers as a factor, see `teacher`")
    overrides: list[str] = Field(default_factory=list, description="KEY=VALUE on top of `base`")
    methods: list[str] | None = Field(None, description="null = the study's `methods`")
    choices_from: str | None = Field(
        None, description="reuse another regime's searched settings instead of searching here"
    )
    seeds: list[int] | None = Field(None, min_length=1, description="null = the study's seeds")
    candidates: dict[str, list[list[str]]] | None = Field(
        None,
        description="this regime's own search candidates per method (null: search.candidates); "
        "the same number for every method",
    )
    curve: bool = Field(False, description="also score the accuracy-vs-resolution curve here")
    specialists: list[str] = Field(
        default_factory=list,
        description="regimes of single-size students that this regime's students (trained "
        "across sizes) are compared with, each at the specialist's own size and by the worst "
        "point of the resolution curve; every regime named here and this one score the curve",
    )
    reuse: dict[str, str] = Field(
        default_factory=dict,
        description="method -> another regime whose final runs of it this regime shows instead "
        "of training them again: only for a method that learns from labels alone (the LR "
        "oracle) and trains exactly the same there (its stage fingerprint is checked)",
    )
    teacher_per_seed: bool = Field(
        False,
        description="train the teacher once per seed (a retrieval class split per seed): the "
        "teacher config runs with the regime's seeds and each run takes its seed's teacher",
    )
    role: Literal["exploratory", "confirmatory"] = Field(
        "exploratory",
        description="confirmatory: its design, candidates, comparator and margin were written "
        "before its first run (it must declare comparisons and a margin); exploratory: "
        "hypothesis-generating, marked so on the page",
    )
    comparisons: dict[str, str | list[str]] | None = Field(
        None, description="method -> the method(s) it is compared with here (null: the "
        "study's `comparisons`, where the regime lists both)",
    )
    margin: float | None = Field(
        None, gt=0, description="equivalence margin in points of the headline metric (null: "
        "the study's `margin`)",
    )


    @property
    def teacher_names(self) -> list[str]:
        return [self.teacher] if isinstance(self.teacher, str) else list(self.teacher)


class SearchConfig(_Strict):
    seed: int = Field(0, description="the seed candidates are trained with (see `seeds`)")
    seeds: list[int] | None = Field(
        None, min_length=1, description="several search seeds (two or more recommended): a "
        "candidate's score is its mean validation over them; null: `seed` alone")
    candidates: dict[str, list[list[str]]] = Field(
        description="method -> list of candidate override lists (equal length for all methods)"
    )
    extend: int = Field(
        0, ge=0, le=8, description="where a method's candidates vary one numeric setting and "
        "the choice is an end of that grid, add the next step beyond it (geometric) and search "
        "again, at most this many steps per search, until the choice is interior; 0: never")


Call = Literal["above", "below", "equivalent"]  # what a target may ask the page's call to be


class TargetConfig(_Strict):
    """A result the study sets out to reach, written before any run: the page reports each one
    met or not, and by how much, so a target missed is said as plainly as one met."""

    claim: str = Field(description="what the target says, in words, as the page shows it")
    regime: str
    method: str
    comparator: str | None = Field(
        None, description="a comparison the regime declares (`comparisons`): the target is on "
        "method - comparator, paired over seeds")
    at_least: float | None = Field(
        None, description="the mean paired difference must reach this (points)")
    calls: list[Call] | None = Field(
        None, min_length=1, description="the page's call (Holm-adjusted) must be one of these")
    gap_closed: float | None = Field(
        None, gt=0, le=100, description="percent of the gap between the label-only student "
        "(scratch) and the LR oracle the method's mean must close")


class StudyConfig(_Strict):
    name: str = "study"
    title: str | None = Field(
        None, description="the results page's heading (default: the name); a reader's words, "
        "not part of the registered design"
    )
    output_dir: str = "runs/study"
    workers: int = Field(1, ge=1, description="runs trained in parallel (processes)")
    records: str = Field(
        "records",
        description="folder (relative to this file) of the committed run records: a recorded "
        "run is reused, never trained again",
    )
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    teachers: dict[str, str | dict[str, Any]] = Field(
        description="name -> experiment YAML (relative to this file), or the experiment itself"
    )
    executor: ExecutorConfig = Field(
        ExecutorConfig(), description="where runs train: local, ray or slurm (docs/scale.md)"
    )
    base: dict[str, Any] = Field(description="the experiment every student run starts from")
    methods: list[str]
    baselines: list[str] = Field(
        default_factory=_registered_baselines,
        description="the methods results are compared against (default: every 'baseline')",
    )
    main_regime: str
    regimes: dict[str, RegimeConfig]
    search: SearchConfig
    ablation_methods: list[str] | None = Field(
        None, description="methods the orders ablation varies; null = every 'ours' method"
    )
    ablation_seeds: list[int] = Field(
        default_factory=lambda: [0], description="seeds of the orders ablation (main regime)"
    )
    label_curve: list[str] = Field(
        default_factory=list,
        description="regimes that differ in data.label_fraction, drawn along the share of labels "
        "(what the teacher is worth as labels grow scarce)",
    )
    curve_sizes: list[int] | None = Field(
        None, description="accuracy-vs-resolution sizes for the main regime's final models"
    )
    discussion: str | None = Field(
        None, description="hand-written Markdown (relative to this file) appended to RESULTS.md"
    )
    comparisons: dict[str, str | list[str]] = Field(
        default_factory=dict,
        description="method -> the method(s) it is compared with, declared before any run: in "
        "every regime that lists both, called above / below / equivalent / inconclusive, "
        "Holm-adjusted over the page",
    )
    margin: float | None = Field(
        None, gt=0, description="equivalence margin (points of the headline metric): a "
        "difference shown (TOST) to lie within +-margin is called equivalent; null: none",
    )
    targets: list[TargetConfig] = Field(
        default_factory=list, description="results the study sets out to reach, declared "
        "before any run; the page's Targets table says of each met or not, and by how much "
        "(a target with no threshold is reported only)",
    )
    budget_cpu_hours: float | None = Field(
        None, gt=0, description="the CPU-hours the study may take (its runs and teachers): a "
        "row of the Targets table",
    )

    @model_validator(mode="after")
    def _consistent(self) -> StudyConfig:
        from horkd.methods import METHODS

        for where, seeds in [("seeds", self.seeds)] + [(f"regimes.{n}.seeds", r.seeds)
                                                       for n, r in self.regimes.items()]:
            if seeds and len(set(seeds)) != len(seeds):
                raise ValueError(f"{where}: a seed is listed twice ({seeds})")

        for name in self.methods + self.baselines:
            METHODS.get(name)
        if self.main_regime not in self.regimes:
            raise ValueError(f"main_regime '{self.main_regime}' is not one of the regimes")
        for name, regime in self.regimes.items():
            for teacher in regime.teacher_names:
                if teacher not in self.teachers:
                    raise ValueError(f"regimes.{name}.teacher: '{teacher}' is not a teacher")
            if not regime.teacher_names:
                raise ValueError(f"regimes.{name}.teacher: name at least one teacher")
            several = len(regime.teacher_names) > 1 or regime.teacher_seeds is not None
            if several and regime.teacher_per_seed:
                raise ValueError(f"regimes.{name}: teacher_per_seed trains a teacher per run "
                                 "seed; it takes one teacher and no teacher_seeds")
            if regime.teacher_seeds and len(set(regime.teacher_seeds)) != len(
                    regime.teacher_seeds):
                raise ValueError(f"regimes.{name}.teacher_seeds: a seed is listed twice")
            source = regime.choices_from
            if source is not None and (
                source not in self.regimes or self.regimes[source].choices_from is not None
            ):
                raise ValueError(
                    f"regimes.{name}.choices_from: '{source}' must be a regime that searches"
                )
            if source is not None:
                # references (teacher_lr, lr_oracle) take no searched settings
                missing = {m for m in self.regime_methods(name) if searched(m)} - set(
                    self.regime_methods(source))
                if missing:
                    raise ValueError(
                        f"regimes.{name}: methods {sorted(missing)} are not searched in '{source}'"
                    )
            for method, other in regime.reuse.items():
                _check_reuse(self, name, method, other)
            for other in regime.specialists:
                if other not in self.regimes or other == name:
                    raise ValueError(f"regimes.{name}.specialists: '{other}' is not another regime")
            # a typo in one regime fails here, not hours into the study, named where it is
            _raise_problems(self.base, [(f"regimes.{name}.overrides", list(regime.overrides))])
            for method in self.regime_methods(name):
                METHODS.get(method)
                if method not in self.search.candidates and searched(method):
                    raise ValueError(f"search.candidates has no entry for method '{method}'")
        for name in self.label_curve:
            if name not in self.regimes:
                raise ValueError(f"label_curve: '{name}' is not a regime")
        for where, candidates in [("search.candidates", self.search.candidates)] + [
            (f"regimes.{n}.candidates", r.candidates) for n, r in self.regimes.items()
            if r.candidates
        ]:
            budgets = {len(c) for c in candidates.values()}
            if len(budgets) > 1:
                sizes = {m: len(c) for m, c in candidates.items()}
                raise ValueError(
                    f"{where}: every method needs the same number of search candidates: {sizes}"
                )
        self._check_candidates()
        _check_comparisons(self)
        _check_targets(self)
        return self

    def _check_candidates(self) -> None:
        """Every candidate a regime trains with (its own search's, or those of the regime it
        takes its choices from) on top of its overrides: a typo in one is named by its place,
        ``search.candidates.<method>[i]``, before anything trains."""
        for name, regime in self.regimes.items():
            source = regime.choices_from or name
            for method in self.regime_methods(name):
                if not searched(method) or method not in self.search.candidates:
                    continue
                own = (self.regimes[source].candidates or {}).get(method)
                where = (f"regimes.{source}.candidates.{method}" if own
                         else f"search.candidates.{method}")
                for i, candidate in enumerate(self.candidates(source, method)):
                    _raise_problems(self.base, [(f"regimes.{name}.overrides",
                                                 list(regime.overrides)),
                                                (f"{where}[{i}]", list(candidate))])

    def candidates(self, regime: str, method: str) -> list[list[str]]:
        """The search candidates of ``method`` in ``regime``."""
        own = self.regimes[regime].candidates or {}
        return own.get(method) or self.search.candidates[method]

    def order(self) -> list[str]:
        """The regimes in the file's order, each after the regimes it takes choices or runs
        from."""
        order: list[str] = []
        for regime, r in self.regimes.items():
            for source in [r.choices_from, *r.reuse.values()]:
                if source is not None and source not in order:
                    order.append(source)
            if regime not in order:
                order.append(regime)
        return order

    def regime_methods(self, regime: str) -> list[str]:
        return self.regimes[regime].methods or self.methods


def declared_pairs(comparisons: dict[str, str | list[str]] | None,
                   methods: list[str] | None = None) -> list[tuple[str, str]]:
    """``(method, comparator)`` pairs of a ``comparisons`` mapping, in its order; with
    ``methods``, only the pairs whose both methods are among them."""
    pairs = [(m, c) for m, cs in (comparisons or {}).items()
             for c in ([cs] if isinstance(cs, str) else cs)]
    return [p for p in pairs if methods is None or (p[0] in methods and p[1] in methods)]


def regime_comparisons(study: dict[str, Any], regime: str) -> list[tuple[str, str]]:
    """The comparisons declared for ``regime`` (its own, else the study's where it lists both
    methods), from a study as a mapping (the summary's ``study``)."""
    r = study["regimes"][regime]
    methods = r.get("methods") or study["methods"]
    own = r.get("comparisons")
    return declared_pairs(own if own is not None else study.get("comparisons"), methods)


def regime_margin(study: dict[str, Any], regime: str) -> float | None:
    """The regime's equivalence margin, else the study's (None: none declared)."""
    margin = study["regimes"][regime].get("margin")
    return margin if margin is not None else study.get("margin")


def _check_targets(study: StudyConfig) -> None:
    """A target names a regime and a method it trains; its comparison is one the regime
    declares; a gap to close needs the label-only student and the LR oracle beside it."""
    from horkd.methods import METHODS

    for i, t in enumerate(study.targets):
        where = f"targets[{i}]"
        if t.regime not in study.regimes:
            raise ValueError(f"{where}.regime: '{t.regime}' is not one of the regimes")
        if study.regimes[t.regime].role != "confirmatory":
            raise ValueError(f"{where}.regime: '{t.regime}' is exploratory; a target is fixed "
                             "before the first run, so it is set on a confirmatory regime "
                             "(registered with its design)")
        methods = study.regime_methods(t.regime)
        if t.method not in methods:
            raise ValueError(f"{where}.method: '{t.method}' is not trained in '{t.regime}'")
        if (t.at_least is not None or t.calls) and t.comparator is None:
            raise ValueError(f"{where}: at_least and calls are on a comparison: name its "
                             "comparator")
        if t.comparator is None and t.gap_closed is None:
            raise ValueError(f"{where}: measures nothing: name a comparator (a declared "
                             "comparison) or gap_closed")
        pairs = regime_comparisons(study.model_dump(mode="json"), t.regime)
        if t.comparator is not None and (t.method, t.comparator) not in pairs:
            raise ValueError(f"{where}.comparator: '{t.method}' - '{t.comparator}' is not a "
                             f"comparison '{t.regime}' declares (comparisons)")
        label_only = [b for b in study.baselines if b in methods and not METHODS.get(b).needs]
        if t.gap_closed is not None and ("lr_oracle" not in methods or not label_only):
            raise ValueError(f"{where}.gap_closed: '{t.regime}' trains no label-only baseline "
                             "(scratch) and lr_oracle to measure the gap between")


def _check_comparisons(study: StudyConfig) -> None:
    """Declared comparisons name methods the regimes train; a confirmatory regime declares its
    comparator and margin."""
    from horkd.methods import METHODS

    everywhere = {m for name in study.regimes for m in study.regime_methods(name)}
    for method, other in declared_pairs(study.comparisons):
        for name in (method, other):
            METHODS.get(name)
            if name not in everywhere:
                raise ValueError(f"comparisons: '{name}' is in no regime's methods")
        if method == other:
            raise ValueError(f"comparisons: '{method}' is compared with itself")
    raw = study.model_dump()
    for name, regime in study.regimes.items():
        methods = study.regime_methods(name)
        for method, other in declared_pairs(regime.comparisons):
            for each in (method, other):
                if each not in methods:
                    raise ValueError(f"regimes.{name}.comparisons: '{each}' is not one of the "
                                     "regime's methods")
            if method == other:
                raise ValueError(f"regimes.{name}.comparisons: '{method}' is compared with "
                                 "itself")
        if regime.role == "confirmatory":
            missing = [what for what, absent in (
                ("a comparator (comparisons)", not regime_comparisons(raw, name)),
                ("an equivalence margin (margin)", regime_margin(raw, name) is None)) if absent]
            if missing:
                raise ValueError(f"regimes.{name}: a confirmatory regime must declare "
                                 f"{' and '.join(missing)} before its first run, in the regime "
                                 "or the study")


def _check_reuse(study: StudyConfig, regime: str, method: str, source: str) -> None:
    """A reused method must learn the same thing in both regimes: no teacher or assistant (whose
    fingerprints differ between regimes) and the same data, degradation and network settings."""
    from horkd.methods import METHODS
    from horkd.run_dir import student_fingerprint

    where = f"regimes.{regime}.reuse.{method}"
    if source not in study.regimes or source == regime or study.regimes[source].reuse:
        raise ValueError(f"{where}: '{source}' must be another regime that trains its own runs")
    spec = METHODS.get(method)
    if method not in study.regime_methods(regime) or method not in study.regime_methods(source):
        raise ValueError(f"{where}: both regimes must list '{method}' in their methods")
    if spec.needs or searched(method):
        raise ValueError(f"{where}: only a method that learns from labels alone with fixed "
                         f"settings (e.g. lr_oracle) can be reused, not '{method}'")

    def fingerprint(name: str) -> str:
        cfg = config_from_dict(dict(study.base), list(study.regimes[name].overrides))
        return student_fingerprint(cfg, 0, method, teacher=False, assistant=False,
                                   network=spec.network)

    if fingerprint(regime) != fingerprint(source):
        raise ValueError(f"{where}: '{method}' trains differently in '{source}' (its data, "
                         "degradation or network settings differ), so its runs are not this "
                         "regime's")


def searched(method: str) -> bool:
    """Whether a method's settings are searched: every trained method but the references (the
    LR oracle trains with the teacher's own settings)."""
    from horkd.methods import METHODS

    spec = METHODS.get(method)
    return spec.trains and spec.group != "reference"


def _raise_problems(base: dict[str, Any], layers: list[tuple[str, list[str]]]) -> None:
    """A ValueError naming, one line each, every problem of the experiment ``base`` with each
    layer's overrides applied in turn, where the user wrote it: ``base.<key>``, or
    ``<layer>: <key>`` for a key a layer's override set (the last that did)."""
    overrides = [text for _, given in layers for text in given]
    try:
        config_from_dict(dict(base), overrides)
        return
    except ConfigError as err:
        if not err.problems:  # a malformed override: its message quotes it
            at = next((at for at, given in layers if any(t in str(err) for t in given)), None)
            raise ValueError(f"{at}: {err}" if at else str(err)) from None
        problems = err.problems
    given_in = [at for at, given in layers if given]
    lines = []
    for loc, message in problems:
        key = ".".join(loc)
        at = next((at for at, given in reversed(layers) if override_of(loc, given)), None)
        if at is not None:
            lines.append(problem_line(f"{at}: {key}" if key else at, message))
        elif key:
            lines.append(problem_line(f"base.{key}", message))
        else:  # a rule between keys: the last layer that changed anything is where to look
            lines.append(problem_line(given_in[-1] if given_in else "base", message))
    raise ValueError("\n".join(lines).strip())


def _check_teachers(study: StudyConfig, path: Path) -> None:
    """Every teacher's experiment (a file beside the study, or written in it) is valid; a
    problem names the teacher, its file and the key."""
    lines = []
    for name, given in study.teachers.items():
        try:
            if isinstance(given, dict):
                teacher = config_from_dict(dict(given))
            else:
                teacher = load_config(path.parent / given)
            lines += _held_apart_problems(study, name, teacher)
        except ConfigError as err:
            if not err.problems:
                lines.append(problem_line(f"teachers.{name}", str(err)))
            elif isinstance(given, dict):
                lines += [problem_line(".".join((f"teachers.{name}", *loc)), message)
                          for loc, message in err.problems]
            else:
                lines += [problem_line(f"teachers.{name} ({path.parent / given})",
                                       problem_line(".".join(loc), message).strip())
                          for loc, message in err.problems]
    if lines:
        raise ConfigError(f"invalid study {path}:\n" + "\n".join(lines))


def _held_apart_problems(study: StudyConfig, name: str, teacher: Any) -> list[str]:
    """A teacher on a dataset that holds its validation and test images apart (the glyphs'
    fonts) must draw them from the students' set: with another font folder or other shares its
    training fonts may be the students' validation or test fonts, a leak no run could see."""
    data = dict((study.base or {}).get("data") or {})
    dataset = data.get("dataset", DataConfig.model_fields["dataset"].default)
    if teacher.data.dataset != dataset or not holds_validation_apart(dataset):
        return []
    ours = {**{k: f.default for k, f in DataConfig.model_fields.items()}, **data}
    theirs = teacher.data.model_dump()
    return [problem_line(f"teachers.{name}", f"data.{k}={theirs[k]!r} where the students' "
                         f"is {ours[k]!r}: the teacher's training fonts may be the students' "
                         "validation or test fonts; give the teacher the students' setting")
            for k in held_apart_differences(ours, theirs)]


def load_study(path: str | Path) -> tuple[StudyConfig, Path]:
    """The validated study and the folder its relative paths start from; a problem names the
    study file and the key path where it was written (``base.train.student``,
    ``search.candidates.<method>[i]``, a teacher's own file)."""
    path = Path(path)
    raw = read_yaml_mapping(path, "study")
    try:
        study = StudyConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, StudyConfig, f"study {path}")) from None
    _check_teachers(study, path)
    return study, path.parent
