"""The embedded real-data models of PAPA's setting: unconditional 28x28 DDPMs on MNIST digits (``digits``) and
Fashion-MNIST (``fashion``), each with a classifier that judges liked classes. A leaf beside ``shapes``."""

from ...features import register_encoder
from .classifier import DigitClassifier
from .features import DigitsEncoder
from .pipeline import DigitsPipeline, DigitsUNet
from .weights import load_classifier, load_pipeline

register_encoder("digits", lambda: DigitsEncoder("digits"))
register_encoder("fashion", lambda: DigitsEncoder("fashion"))

__all__ = ["DigitsEncoder", "DigitClassifier", "DigitsPipeline", "DigitsUNet", "load_classifier", "load_pipeline"]
