"""One experiment: its context, batches, stages, networks, evaluation and entry points.

``context`` (what a seed is) -> ``batches`` (what a training step sees) -> ``stages`` (train or
load one stage) -> ``networks`` (teacher, assistant, students through the method registry) ->
``evaluation`` (rows, resolution curve, cost) -> ``run`` (every seed, the table, the ablation).
"""

from horkd.experiment.context import RunContext, build_context, load_splits, seed_everything
from horkd.experiment.evaluation import Row, SeedResult, aggregate
from horkd.experiment.networks import Networks
from horkd.experiment.run import (
    AblationResult,
    RunOutcome,
    open_seed,
    owning,
    prepare_run_dir_once,
    run_ablation,
    run_experiment,
    start_processes,
)
from horkd.experiment.stages import StageOutcome, StageRunner
from horkd.run_dir import RunDirError

__all__ = [
    "AblationResult",
    "Networks",
    "Row",
    "RunContext",
    "RunDirError",
    "RunOutcome",
    "SeedResult",
    "StageOutcome",
    "StageRunner",
    "aggregate",
    "build_context",
    "load_splits",
    "open_seed",
    "owning",
    "prepare_run_dir_once",
    "run_ablation",
    "run_experiment",
    "seed_everything",
    "start_processes",
]
