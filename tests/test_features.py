"""Feature encoders: the shipped attribute CNN and CLIP from a local folder."""

import numpy as np
import pytest

from edpbrl_plugin.features import as_image_batch, load_encoder
from edpbrl_plugin.models.shapes import EmbeddedEncoder
from edpbrl_plugin.models.shapes.shapes import ATTRIBUTES, render_batch


@pytest.fixture(scope="module")
def encoder():
    return EmbeddedEncoder()


def test_the_shipped_encoder_recognises_every_attribute_of_procedural_images(encoder):
    images, labels = render_batch(400, seed=99)
    predicted = encoder.predict_attributes(images)
    for name in ATTRIBUTES:
        assert (predicted[name] == labels[name]).mean() >= 0.97, name


def test_features_are_attribute_posteriors_or_a_normalised_embedding(encoder):
    images, _ = render_batch(8, seed=1)
    features = encoder.encode(images.astype(np.float32) / 255.0)
    assert features.shape == (8, 20) and np.allclose(features[:, :4].sum(axis=1), 1.0)
    embedding = load_encoder("embedded-embedding").encode(images)
    assert embedding.shape == (8, 64) and np.allclose(np.linalg.norm(embedding, axis=1), 1.0)
    theta = np.zeros(20)
    theta[9] = 2.0  # blue
    theta[13] = 1.0  # outline
    assert encoder.describe(theta) == "you seem to like: blue, outline"


def test_bad_images_raise_clear_errors():
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        as_image_batch(np.zeros((2, 3, 32, 32)))
    with pytest.raises(ValueError, match="NaN"):
        as_image_batch(np.full((1, 4, 4, 3), np.nan))
    with pytest.raises(ValueError, match="unknown feature encoder"):
        load_encoder("dino")


def test_clip_from_a_local_folder(tmp_path):
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
            "vocab_size": 64,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=12,
    )
    CLIPModel(config).save_pretrained(tmp_path / "clip")
    encoder = load_encoder(f"clip:{tmp_path / 'clip'}")
    features = encoder.encode(np.random.default_rng(0).random((3, 48, 40, 3)))
    assert features.shape == (3, 12) and np.allclose(np.linalg.norm(features, axis=1), 1.0)
    assert encoder.name == f"clip:{tmp_path / 'clip'}" and encoder.dim == 12
    with pytest.raises(FileNotFoundError, match="no CLIP model"):
        load_encoder(f"clip:{tmp_path / 'missing'}")
