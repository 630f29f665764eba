"""What one training stage optimises; :mod:`horkd.methods.presets` registers the named methods."""

from horkd.methods import presets  # noqa: F401  (register)
from horkd.methods.base import Batch, Method, forward_both, freeze, task_loss
from horkd.methods.distill import DistillMethod
from horkd.methods.joint import JointMethod
from horkd.methods.presets import hybrid_loss
from horkd.methods.registry import (
    GROUP_MEANING,
    METHODS,
    MethodContext,
    MethodSpec,
    methods_in,
    register_method,
)
from horkd.methods.semi_supervised import PseudoLabelMethod
from horkd.methods.supervised import SupervisedMethod

__all__ = [
    "GROUP_MEANING",
    "METHODS",
    "Batch",
    "DistillMethod",
    "JointMethod",
    "Method",
    "MethodContext",
    "MethodSpec",
    "PseudoLabelMethod",
    "SupervisedMethod",
    "forward_both",
    "freeze",
    "hybrid_loss",
    "methods_in",
    "register_method",
    "task_loss",
]
