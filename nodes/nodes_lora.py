"""EDPBRL nodes: the online LoRA update, saving it for ComfyUI's LoraLoader, and the session's status."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edpbrl_plugin import UpdateConfig
from edpbrl_plugin.hosting import registry
from edpbrl_plugin.hosting.registry import PipelineHandle
from edpbrl_plugin.loop.report import status_image
from edpbrl_plugin.loop.versions import write_lora
from edpbrl_plugin.tuning.updater import LATENT_DEFAULTS, METHODS

from . import comfy_bridge as comfy
from .nodes_loop import CATEGORY, SESSION, _session
from .types import PIPELINE, REWARD, RewardToken, SessionInput, to_comfy

# Learning rates span decades: a list reads and sets them exactly (a float widget rounds 1e-4 to its step's decimals).
LEARNING_RATES = ("default", "1e-5", "2e-5", "5e-5", "1e-4", "2e-4", "5e-4", "1e-3", "2e-3", "4e-3", "1e-2")


class UpdateLoRA:
    DESCRIPTION = "One online LoRA update from every answer so far (default: learned-reward distillation toward the base model's own samples). Outputs a new versioned pipeline; the input is not changed."
    CATEGORY = f"{CATEGORY}/lora"
    RETURN_TYPES = (PIPELINE, "FLOAT", "STRING")
    RETURN_NAMES = ("pipeline", "drift", "report")
    OUTPUT_TOOLTIPS = (
        "The pipeline at the new LoRA version.",
        "Distance from the base model (0 = unchanged).",
        "What the update did.",
    )
    FUNCTION = "update"
    OUTPUT_NODE = (
        True  # ComfyUI runs only output nodes and their inputs; the update must run even when nothing reads it
    )

    @classmethod
    def INPUT_TYPES(cls):
        defaults = UpdateConfig()
        return {
            "required": {
                "pipeline": (PIPELINE, {"tooltip": "The pipeline the candidates came from."}),
                "reward": (REWARD, {"tooltip": "From Record + update reward (orders the update after the answer)."}),
                "method": (
                    list(METHODS),
                    {
                        "default": "default",
                        "tooltip": "default = learned-reward distillation (+ PAPA on like/dislike); dpo = Diffusion-DPO on the answered pairs; papa / epapa use like/dislike answers.",
                    },
                ),
                "steps": (
                    "INT",
                    {
                        "default": defaults.steps,
                        "min": 1,
                        "max": 1000,
                        "tooltip": "Optimizer steps (the drift cap may end the update sooner).",
                    },
                ),
                "learning_rate": (
                    list(LEARNING_RATES),
                    {
                        "default": "default",
                        "tooltip": f"AdamW learning rate of the LoRA; default = the model's own ({defaults.learning_rate:g} embedded, {LATENT_DEFAULTS['learning_rate']:g} Stable Diffusion / SDXL).",
                    },
                ),
                "distill_samples": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 4096,
                        "tooltip": f"Base-model samples the learned reward re-weights (sampled once per model and prompts, then cached); 0 = the model's default ({defaults.distill_samples} embedded, {LATENT_DEFAULTS['distill_samples']} Stable Diffusion / SDXL). Method dpo uses none.",
                    },
                ),
                "drift_cap": (
                    "FLOAT",
                    {
                        "default": defaults.drift_cap,
                        "min": 0.0,
                        "max": 10.0,
                        "step": 0.01,
                        "tooltip": "Stop and restore when the drift from the base passes this.",
                    },
                ),
                "prompt": (
                    "STRING",
                    {
                        "default": "",
                        "multiline": True,
                        "tooltip": "Prompts of fresh samples for distillation, one per line.",
                    },
                ),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")

    def update(
        self, pipeline, reward, method, steps, learning_rate, distill_samples, drift_cap, prompt, unique_id=None
    ):
        if not isinstance(pipeline, PipelineHandle) or not isinstance(reward, RewardToken):
            raise ValueError("connect pipeline (Load pipeline / Update LoRA) and reward (Record + update reward)")
        if pipeline.session not in (None, reward.session):
            raise ValueError(f"the pipeline carries session {pipeline.session!r}'s LoRA, not {reward.session!r}")
        _session(reward.session)
        prompts = [line.strip() for line in prompt.splitlines()] or [""]
        loop = registry.loop(reward.session, pipeline, prompts=prompts)
        pipe = loop.pipe
        if learning_rate not in LEARNING_RATES:
            raise ValueError(f"learning_rate must be one of {LEARNING_RATES}, got {learning_rate!r}")
        rate = None if learning_rate == "default" else float(learning_rate)
        config = UpdateConfig.for_pipeline(
            pipe,
            method=method,
            steps=steps,
            learning_rate=rate,
            distill_samples=distill_samples or None,
            drift_cap=drift_cap,
        )
        report, version = loop.update(config, on_step=comfy.progress(steps, unique_id), check=comfy.check_interrupted)
        ui = {"text": [report.summary()]}
        if version is None:
            return {"ui": ui, "result": (pipeline, 0.0, report.summary())}
        registry.mark_version(pipe, reward.session, version.version)
        updated = dataclasses.replace(pipeline, session=reward.session, version=version.version)
        return {"ui": ui, "result": (updated, float(report.drift), report.summary())}


class SaveLoRA:
    DESCRIPTION = "Write the LoRA as a versioned kohya file into ComfyUI's loras folder (the stock LoraLoader applies it at the trained strength) plus the diffusers format."
    CATEGORY = f"{CATEGORY}/lora"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("lora_name",)
    OUTPUT_TOOLTIPS = ("The file name to pick in LoraLoader.",)
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pipeline": (PIPELINE, {"tooltip": "From Update LoRA."}),
                "filename_prefix": (
                    "STRING",
                    {
                        "default": "edpbrl",
                        "tooltip": "Files are named <prefix>_<session>_v<version>.safetensors (ComfyUI caches LoRAs by name).",
                    },
                ),
            }
        }

    def save(self, pipeline, filename_prefix):
        if not isinstance(pipeline, PipelineHandle):
            raise ValueError("pipeline must come from Update LoRA")
        if pipeline.version == 0:
            raise ValueError(
                "this pipeline has no LoRA yet: connect the output of Update LoRA after at least one answer"
            )
        pipe = registry.materialize(pipeline)
        prefix = "".join(c for c in filename_prefix if c.isalnum() or c in "_-") or "edpbrl"
        name = f"{prefix}_{pipeline.session}_v{pipeline.version}.safetensors"
        active = _session(pipeline.session)
        metadata = {
            "session": pipeline.session,
            "version": pipeline.version,
            "answers": active.model.n_answers_,
            "source": Path(pipeline.source).name,
        }
        path = write_lora(pipe, comfy.loras_dir() / "edpbrl", name, metadata, diffusers=False)["kohya"]
        diffusers = registry.lora_version(pipeline.session, pipeline.version).file
        lora_name = f"edpbrl/{name}"
        return {"ui": {"text": [f"{lora_name} (kohya, {path})\n{diffusers} (diffusers)"]}, "result": (lora_name,)}


class SessionStatus(SessionInput):
    DESCRIPTION = "The session's learning curve, drift per LoRA version and learned taste, as an image."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("plot", "status")
    OUTPUT_TOOLTIPS = ("Learning curve and reward estimate.", "Status text.")
    FUNCTION = "status"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"session": SESSION},
            "optional": {"reward": (REWARD, {"tooltip": "Orders this after Record."})},
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")

    def status(self, session, reward=None):
        active = _session(reward.session if isinstance(reward, RewardToken) else session, create=False)
        return (to_comfy(status_image(active)[None].astype("float32") / 255.0), active.status_text())
