"""Using a trained model: predict, search, verify, and the Python API (:class:`Recogniser`)."""

from horkd.inference.model_file import ModelFile, resolve_model
from horkd.inference.recogniser import Recogniser

__all__ = ["ModelFile", "Recogniser", "resolve_model"]
