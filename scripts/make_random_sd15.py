"""Build a random-weight Stable Diffusion 1.5-shaped pipeline from configs (no download) and save it as a
diffusers folder: enough for a real ComfyUI to load, sample with KSampler and apply LoRAs to, on CPU.

Developer tool for verifying the native-graph workflow (not used by CI):

    python scripts/make_random_sd15.py /path/to/ComfyUI/models/diffusers/sd15-random

ComfyUI's DiffusersLoader + CheckpointSave nodes then turn the folder into a single-file checkpoint.
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from edpbrl_plugin.models.random_sd import random_sd15_pipeline


def main(out: str) -> None:
    pipe = random_sd15_pipeline()
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
