"""Studies: many runs (regimes x methods x seeds) with a validation search, one RESULTS.md."""

from horkd.study.config import StudyConfig, load_study
from horkd.study.document import write_document
from horkd.study.runner import run_study

__all__ = ["StudyConfig", "load_study", "run_study", "write_document"]
