"""The shipped embedded generator: offline loading, sampling, save/load round trip, bad input."""

import shutil

import numpy as np
import pytest
import torch

from edpbrl_plugin.models.shapes.shapes import ATTRIBUTES, render_batch, words_to_labels
from edpbrl_plugin.models.shapes.weights import GENERATOR_DIR, load_attribute_encoder, load_pipeline


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline()


def sample(pipe, prompt, seed, steps=3):
    return pipe(
        prompt=prompt,
        num_images_per_prompt=2,
        generator=torch.Generator().manual_seed(seed),
        num_inference_steps=steps,
        output_type="np",
    ).images


def test_samples_have_the_right_shape_and_range_and_follow_the_seed(pipe):
    a, b, c = sample(pipe, "blue star", 0), sample(pipe, "blue star", 0), sample(pipe, "blue star", 1)
    assert a.shape == (2, 32, 32, 3) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 0.01
    pil = pipe("red", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images
    assert pil[0].size == (32, 32) and pil[0].mode == "RGB"
    pt = pipe("", num_inference_steps=2, guidance_scale=1.0, output_type="pt").images
    assert pt.shape == (1, 3, 32, 32)


def test_guidance_runs_only_on_prompted_rows_and_gives_the_images_of_guiding_each_alone(pipe):
    """An empty prompt's guided prediction is its plain one, so unconditional rows skip the second pass; a
    batch mixing both gives each row the image it gets on its own."""
    from edpbrl_plugin.tuning.sampling import sample_images

    mixed = sample_images(pipe, ["", "blue star", "", "red circle"], [0, 1, 2, 3], 4, guidance_scale=3.0)
    alone = [sample_images(pipe, [p], [s], 4, guidance_scale=3.0)[0] for p, s in (("", 0), ("blue star", 1))]
    unguided = sample_images(pipe, [""], [0], 4, guidance_scale=1.0)[0]
    np.testing.assert_allclose(mixed[0], alone[0], atol=1e-5)
    np.testing.assert_allclose(mixed[1], alone[1], atol=1e-5)
    np.testing.assert_allclose(alone[0], unguided, atol=1e-5)
    prompted = sample_images(pipe, ["blue star"], [1], 4, guidance_scale=1.0)[0]
    assert np.abs(prompted - alone[1]).mean() > 1e-3  # guidance still acts where a prompt says something


def test_step_callback_sees_every_step_and_can_replace_the_latents(pipe):
    seen = []

    def blank(pipeline, step, timestep, tensors):
        seen.append(step)
        return {"latents": torch.zeros_like(tensors["latents"])}

    images = pipe("red", num_inference_steps=3, callback_on_step_end=blank, output_type="np").images
    assert seen == [0, 1, 2]
    np.testing.assert_allclose(images, 0.5)
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
        pipe("red", num_inference_steps=2, callback_on_step_end=blank, callback_on_step_end_tensor_inputs=["cond"])


def test_the_pipeline_is_small_and_uses_the_specified_scheduler(pipe):
    n = sum(p.numel() for p in pipe.unet.parameters())
    assert 1_000_000 <= n <= 2_000_000
    config = pipe.scheduler.config
    assert (
        config.prediction_type == "v_prediction"
        and config.rescale_betas_zero_snr
        and config.timestep_spacing == "trailing"
    )
    assert sum(f.stat().st_size for f in GENERATOR_DIR.rglob("*.safetensors")) <= 10_000_000


def test_save_pretrained_from_pretrained_round_trip(pipe, tmp_path):
    from edpbrl_plugin.models.shapes.pipeline import ShapesPipeline

    pipe.save_pretrained(tmp_path / "copy")
    again = ShapesPipeline.from_pretrained(tmp_path / "copy")
    again.set_progress_bar_config(disable=True)
    np.testing.assert_allclose(
        sample(again, "green square outline", 3), sample(pipe, "green square outline", 3), atol=1e-5
    )


def test_unknown_words_are_an_error_listing_the_vocabulary_or_ignored_with_a_warning(pipe):
    with pytest.raises(ValueError, match="unknown word 'castle'.*vocabulary is: circle, square"):
        pipe("blue castle", num_inference_steps=1)
    with pytest.warns(UserWarning, match="ignored"):
        pipe("blue castle", num_inference_steps=1, strict=False)
    with pytest.raises(ValueError, match="two values of 'hue'"):
        pipe("blue red", num_inference_steps=1)
    with pytest.raises(ValueError, match="unknown attribute word"):
        words_to_labels(["castle"])


def test_missing_or_corrupt_weights_are_clear_errors_naming_the_file(tmp_path):
    shutil.copytree(GENERATOR_DIR, tmp_path / "gen")
    (tmp_path / "gen" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="unet/diffusion_pytorch_model.safetensors is missing"):
        load_pipeline(tmp_path / "gen")
    shutil.copytree(GENERATOR_DIR, tmp_path / "bad")
    (tmp_path / "bad" / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"garbage" * 100)
    with pytest.raises(RuntimeError, match="could not load the embedded weights in .*bad"):
        load_pipeline(tmp_path / "bad")
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        load_attribute_encoder(tmp_path / "nowhere")


def test_procedural_data_is_deterministic_and_labelled():
    a, labels = render_batch(16, seed=5)
    b, _ = render_batch(16, seed=5)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (16, 32, 32, 3) and set(labels) == set(ATTRIBUTES)
    fixed, fixed_labels = render_batch(8, seed=1, hue=5, background=1)
    assert (fixed_labels["hue"] == 5).all() and (fixed_labels["background"] == 1).all()


def test_the_demo_refuses_a_question_size_it_cannot_ask_before_loading_anything(tmp_path):
    from edpbrl_plugin.demo import run_demo

    for k, message in ((1, "integer >= 2"), (25, "larger than the pool of 24")):
        with pytest.raises(ValueError, match=message):
            run_demo(tmp_path / "demo", k=k, candidates_per_round=24)
    assert not (tmp_path / "demo").exists()
