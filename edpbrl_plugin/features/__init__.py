"""Feature encoders: images -> the vectors the choice model is linear in. CLIP registers here; a model
package registers its own encoder (``models/shapes`` registers ``embedded``)."""

from . import clip  # noqa: F401  (registers "clip:<folder>")
from .base import FeatureEncoder, as_image_batch, encoder_names, load_encoder, register_encoder

__all__ = ["FeatureEncoder", "as_image_batch", "encoder_names", "load_encoder", "register_encoder"]
