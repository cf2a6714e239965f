"""Save and load the preference LoRA: diffusers format and a kohya file ComfyUI applies at the trained strength.

ComfyUI's LoraLoader reads kohya names, ``lora_unet_<diffusers module path, '.' -> '_'>`` with
``.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``, and scales by alpha / rank. diffusers' own
``convert_state_dict_to_kohya`` writes alpha = rank, which applies a LoRA trained with
lora_alpha != rank at the wrong strength; we write ``.alpha`` = lora_alpha.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .adapters import ADAPTER_NAME, adapter_state, add_adapter, load_adapter_state

KOHYA_PREFIX = "lora_unet_"


def base_fingerprint(unet) -> str:
    """A short hash of the UNet's architecture and parameter shapes: which base a LoRA belongs to."""
    shapes = sorted(
        (n.replace(".base_layer", ""), tuple(p.shape)) for n, p in unet.named_parameters() if "lora_" not in n
    )
    config = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
    payload = json.dumps([config, shapes], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def kohya_state_dict(unet, name: str = ADAPTER_NAME) -> dict[str, torch.Tensor]:
    """The adapter in kohya names with ``.alpha`` = the adapter's lora_alpha."""
    alpha = float(unet.peft_config[name].lora_alpha)
    out = {}
    for key, value in adapter_state(unet, name).items():
        module, kind = key.rsplit(".lora_", 1)  # "down_blocks.0...to_q", "A.weight"
        stem = KOHYA_PREFIX + module.replace(".", "_")
        out[f"{stem}.lora_{'down' if kind.startswith('A') else 'up'}.weight"] = value.contiguous().float()
        out[f"{stem}.alpha"] = torch.tensor(alpha)
    return out


def save_kohya(unet, path: str | Path, name: str = ADAPTER_NAME, metadata: dict | None = None) -> Path:
    """Write the kohya safetensors file (metadata: base model, rank, alpha, plus ``metadata``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = unet.peft_config[name]
    info = {
        "edpbrl_base": base_fingerprint(unet),
        "edpbrl_rank": str(config.r),
        "edpbrl_alpha": str(config.lora_alpha),
        "edpbrl_targets": json.dumps(sorted(config.target_modules)),
        **{f"edpbrl_{k}": str(v) for k, v in (metadata or {}).items()},
    }
    tmp = path.with_suffix(".tmp")
    save_file(kohya_state_dict(unet, name), str(tmp), metadata=info)
    tmp.replace(path)
    return path


def save_diffusers(
    pipe,
    folder: str | Path,
    name: str = ADAPTER_NAME,
    weight_name: str = "pytorch_lora_weights.safetensors",
    metadata: dict | None = None,
) -> Path:
    """diffusers format through the pipeline's ``save_lora_weights`` (keeps rank and alpha in its metadata)."""
    folder = Path(folder)
    config = pipe.unet.peft_config[name]
    # PEFT key names throughout: diffusers' older "lora.down" names cover only attention layers, and a
    # file mixing both styles loses its attention keys when loaded into SDXL.
    layers = adapter_state(pipe.unet, name)
    type(pipe).save_lora_weights(
        folder, unet_lora_layers=layers, weight_name=weight_name, unet_lora_adapter_metadata=config.to_dict()
    )
    (folder / "edpbrl.json").write_text(json.dumps({"base": base_fingerprint(pipe.unet), **(metadata or {})}, indent=1))
    return folder / weight_name


def read_metadata(path: str | Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def _load_kohya(unet, file: Path, name: str) -> None:
    """Load a kohya file by matching its names to this UNet's module paths (exact for any architecture;
    diffusers' converter guesses SD/SDXL layouts and drops SDXL attention keys of diffusers-named files)."""
    from safetensors.torch import load_file

    state = load_file(str(file))
    modules = {KOHYA_PREFIX + n.replace(".", "_"): n for n, _ in unet.named_modules() if n}
    peft_state, alphas, ranks = {}, set(), set()
    for key, value in state.items():
        stem, suffix = key.split(".", 1)
        if stem not in modules:
            raise ValueError(f"{file} has LoRA key {key} for a module this UNet does not have")
        if suffix == "alpha":
            alphas.add(float(value))
        elif suffix in ("lora_down.weight", "lora_up.weight"):
            peft_state[f"{modules[stem]}.lora_{'A' if 'down' in suffix else 'B'}.weight"] = value
            if "down" in suffix:
                ranks.add(value.shape[0])
    if len(ranks) != 1 or len(alphas) > 1:
        raise ValueError(f"{file} mixes ranks {sorted(ranks)} / alphas {sorted(alphas)}; one of each is supported")
    rank = ranks.pop()
    targets = sorted({k.rsplit(".lora_", 1)[0] for k in peft_state})
    add_adapter(unet, rank=rank, alpha=alphas.pop() if alphas else rank, targets=targets, name=name)
    load_adapter_state(unet, peft_state, name)


def load_lora(pipe, path: str | Path, name: str = ADAPTER_NAME, scale: float = 1.0) -> None:
    """Load a saved preference LoRA (diffusers folder / file, or kohya file) as adapter ``name``.

    Refuses a LoRA made for a different base model with a clear error instead of loading a mismatch.
    """
    path = Path(path)
    file = path / "pytorch_lora_weights.safetensors" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no LoRA file at {file}")
    expected = base_fingerprint(pipe.unet)
    recorded = read_metadata(file).get("edpbrl_base")
    if recorded is None and path.is_dir() and (path / "edpbrl.json").exists():
        recorded = json.loads((path / "edpbrl.json").read_text()).get("base")
    if recorded is not None and recorded != expected:
        raise ValueError(
            f"{file} was trained for a different base model (fingerprint {recorded}, this pipeline's UNet is "
            f"{expected}); load it into the pipeline it was made for"
        )
    if name in (getattr(pipe.unet, "peft_config", None) or {}):
        pipe.unet.delete_adapters(name)
    with safe_open(str(file), framework="pt") as f:
        kohya = any(k.startswith(KOHYA_PREFIX) for k in f.keys())
    try:
        if kohya:
            _load_kohya(pipe.unet, file, name)
        else:
            pipe.load_lora_weights(str(file), adapter_name=name)
    except (RuntimeError, ValueError, KeyError) as error:
        raise ValueError(
            f"{file} does not fit this pipeline's UNet ({error}); it was made for another base model"
        ) from error
    pipe.unet.set_adapters([name], weights=[scale])
