"""Recognition tasks: classification, cross-resolution retrieval, LR face recognition."""

from horkd.tasks import classification, face, retrieval  # noqa: F401  (register)
from horkd.tasks.base import TASKS, Scoring, Task, embed

__all__ = ["TASKS", "Scoring", "Task", "embed"]
