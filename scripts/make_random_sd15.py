"""Build a random-weight Stable Diffusion 1.5-shaped pipeline from configs (no download) and save it as a
diffusers folder: enough for a real ComfyUI to load, sample with KSampler and apply LoRAs to, on CPU.

Developer tool for verifying the native-graph workflow (not used by CI):

    python scripts/make_random_sd15.py /path/to/ComfyUI/models/diffusers/sd15-random

ComfyUI's DiffusersLoader + CheckpointSave nodes then turn the folder into a single-file checkpoint.
"""

import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode


def main(out: str) -> None:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768,
        attention_head_dim=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=2,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=512,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_attention_heads=12,
            num_hidden_layers=12,
            max_position_embeddings=77,
            vocab_size=49408,
            projection_dim=768,
            hidden_act="quick_gelu",
        )
    )
    symbols = list(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(torch.float16).save_pretrained(out)
    _legacy_text_encoder_keys(Path(out) / "text_encoder" / "model.safetensors")
    print(f"wrote {out}")


def _legacy_text_encoder_keys(path: Path) -> None:
    """transformers 5 saves CLIPTextModel keys without the ``text_model.`` prefix that ComfyUI's DiffusersLoader
    expects (it would silently keep uninitialised CLIP weights); write them the way released SD1.5 folders do."""
    tensors = load_file(path)
    save_file(
        {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in tensors.items()},
        path,
        metadata={"format": "pt"},
    )


if __name__ == "__main__":
    main(sys.argv[1])
