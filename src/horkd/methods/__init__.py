"""What one training stage optimises; see :mod:`horkd.methods.presets` for the named methods."""

from horkd.methods.base import Batch, Method, freeze, task_loss
from horkd.methods.distill import DistillMethod
from horkd.methods.joint import JointMethod
from horkd.methods.presets import METHODS, MethodContext, MethodSpec, hybrid_loss, register_method
from horkd.methods.supervised import SupervisedMethod

__all__ = [
    "METHODS",
    "Batch",
    "DistillMethod",
    "JointMethod",
    "Method",
    "MethodContext",
    "MethodSpec",
    "SupervisedMethod",
    "freeze",
    "hybrid_loss",
    "register_method",
    "task_loss",
]
