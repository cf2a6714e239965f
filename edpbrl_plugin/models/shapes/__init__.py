"""The embedded styled-shapes model: a 32x32 text-to-image ``DiffusionPipeline``, its attribute-CNN feature
encoder and its judge. A leaf: it imports only the feature-encoder interface and image helpers, never the loop.
"""

from ...features import register_encoder
from .features import EmbeddedEncoder
from .judge import AttributeJudge, AttributeTaste
from .pipeline import ShapesPipeline
from .weights import load_pipeline as load_shapes_pipeline

register_encoder("embedded", EmbeddedEncoder)
register_encoder("embedded-attributes", EmbeddedEncoder)
register_encoder("embedded-embedding", lambda: EmbeddedEncoder("embedding"))

__all__ = ["AttributeJudge", "AttributeTaste", "EmbeddedEncoder", "ShapesPipeline", "load_shapes_pipeline"]
