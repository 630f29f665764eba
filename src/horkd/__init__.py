"""horkd: hybrid order relational knowledge distillation for cross-resolution recognition."""

__version__ = "0.1.0"
