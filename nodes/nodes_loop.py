"""EDPBRL nodes: the active personalization loop as a graph.

Load pipeline -> Sample candidates -> Select query (Fisher) -> Ask -> Record + update reward ->
Update LoRA -> Save LoRA / Session status. Each node validates its inputs and calls one engine
function; session state lives in the engine's store, keyed by the ``session`` widget.
"""

from __future__ import annotations

import dataclasses
import os

from edpbrl_plugin import StoreError
from edpbrl_plugin.hosting import registry
from edpbrl_plugin.hosting.broker import BROKER
from edpbrl_plugin.hosting.registry import PipelineHandle
from edpbrl_plugin.loop.session import Candidates
from edpbrl_plugin.querying.strategies import DEFAULT_STRATEGY, STRATEGIES

from . import comfy_bridge as comfy
from .types import (
    ANSWER,
    CANDIDATES,
    ENCODER,
    PIPELINE,
    PROMPTS,
    QUERY,
    REWARD,
    AnswerToken,
    QueryToken,
    RewardToken,
    SessionInput,
    check_session,
    session_input_error,
    to_comfy,
    to_numpy,
)

CATEGORY = "EDPBRL"
SESSION = (
    "STRING",
    {
        "default": "default",
        "tooltip": "Session id: the store keeps answers and LoRA versions per session (letters, digits, _ - .).",
    },
)


def _seed_input(tooltip: str) -> tuple:
    """A seed widget without ComfyUI's randomize control: the engine moves each run past the session's samples."""
    return ("INT", {"default": 0, "min": 0, "max": 2**31 - 1, "control_after_generate": False, "tooltip": tooltip})


def _session(session_id: str, encoder=None, create: bool = True):
    try:
        return registry.session(check_session(session_id), encoder, create=create)
    except StoreError as error:
        raise ValueError(str(error)) from error


class LoadPipeline:
    DESCRIPTION = "A diffusers pipeline for sampling and LoRA updates: an embedded offline model (styled shapes, MNIST digits, Fashion-MNIST), a diffusers folder, or a single-file checkpoint."
    CATEGORY = f"{CATEGORY}/model"
    RETURN_TYPES = (PIPELINE,)
    RETURN_NAMES = ("pipeline",)
    OUTPUT_TOOLTIPS = ("Versioned handle of the loaded pipeline (base model, no LoRA).",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        models = (
            list(registry.EMBEDDED_SOURCES)
            + [f"diffusers/{d}" for d in comfy.diffusers_folders()]
            + [f"checkpoints/{c}" for c in comfy.model_files("checkpoints")]
        )
        return {
            "required": {
                "model": (
                    models,
                    {
                        "default": "embedded",
                        "tooltip": "Shipped with the pack (no download): embedded = the 32x32 styled-shapes model (prompts); embedded-digits / embedded-fashion = unconditional 28x28 MNIST digits / Fashion-MNIST (leave prompts empty; use the encoder of the same name).",
                    },
                )
            },
            "optional": {
                "config": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "For a single-file checkpoint: a diffusers folder of the same architecture, by name in ComfyUI's models/diffusers or by full path.",
                    },
                ),
                "resume_session": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "A session id: load that session's latest LoRA version, so each queue run continues the loop. Empty = base model.",
                    },
                ),
            },
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")  # a resumed session's latest version changes between runs

    @classmethod
    def VALIDATE_INPUTS(cls, resume_session=""):
        return session_input_error(resume_session, allow_empty=True)

    def load(self, model: str, config: str = "", resume_session: str = ""):
        if model in registry.EMBEDDED_SOURCES:
            source = model
        else:
            kind, _, name = model.partition("/")
            if kind not in ("diffusers", "checkpoints") or not name:
                raise ValueError(f"unknown model {model!r}; pick one from the list")
            source = comfy.resolve_model(kind, name)
        config = config.strip()
        if config and not os.path.isdir(config):
            config = comfy.resolve_model("diffusers", config)
        base = PipelineHandle(source, config=config or None)
        registry.materialize(base)  # load now: a wrong path fails here, not at the first use
        if not resume_session.strip():
            return (base,)
        session = check_session(resume_session.strip())
        version = registry.latest_version(session)
        return (dataclasses.replace(base, session=session, version=version) if version else base,)


class FeatureEncoder:
    DESCRIPTION = "Image features the reward model is linear in: the embedded attribute CNN, an embedded digits / fashion classifier, or CLIP from a local folder."
    CATEGORY = f"{CATEGORY}/model"
    RETURN_TYPES = (ENCODER,)
    RETURN_NAMES = ("encoder",)
    OUTPUT_TOOLTIPS = ("A feature encoder (images -> feature vectors).",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "encoder": (
                    ["embedded", "embedded-embedding", "digits", "fashion", "clip"],
                    {
                        "default": "embedded",
                        "tooltip": "embedded: 20 attribute posteriors (interpretable); embedded-embedding: 64-d CNN embedding; digits / fashion: the 64-d embedding of the shipped MNIST / Fashion-MNIST classifier (for embedded-digits / embedded-fashion); clip: CLIP image embeddings.",
                    },
                )
            },
            "optional": {
                "clip_path": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "Local folder of a CLIP model saved with save_pretrained (for encoder = clip).",
                    },
                )
            },
        }

    def load(self, encoder: str, clip_path: str = ""):
        if encoder == "clip":
            if not clip_path.strip():
                raise ValueError("encoder = clip needs clip_path: a local folder with a CLIP model")
            return (registry.encoder(f"clip:{clip_path.strip()}"),)
        return (registry.encoder(encoder),)


class SampleCandidates(SessionInput):
    DESCRIPTION = "Sample candidate images with the pipeline and store them (with their features) in the session."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", CANDIDATES)
    RETURN_NAMES = ("images", "candidates")
    OUTPUT_TOOLTIPS = (
        "The sampled images [B, H, W, C].",
        "The candidates (ids, prompts, seeds, features) for Select query.",
    )
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pipeline": (PIPELINE, {"tooltip": "From Load pipeline or Update LoRA."}),
                "encoder": (ENCODER, {"tooltip": "From Feature encoder."}),
                "session": SESSION,
                "prompt": (
                    "STRING",
                    {
                        "default": "",
                        "multiline": True,
                        "tooltip": "One prompt per line, cycled over the samples (empty = unconditional).",
                    },
                ),
                "count": ("INT", {"default": 16, "min": 2, "max": 256, "tooltip": "Candidates to sample."}),
                "seed": _seed_input(
                    "Seed of the session's first sample: samples use seed, seed+1, ..., and each later run continues after the samples the session holds, so queueing again asks about new images."
                ),
                "steps": ("INT", {"default": 20, "min": 1, "max": 200, "tooltip": "Denoising steps."}),
                "guidance": (
                    "FLOAT",
                    {
                        "default": 2.0,
                        "min": 0.0,
                        "max": 30.0,
                        "step": 0.1,
                        "tooltip": "Classifier-free guidance scale (the unconditional embedded-digits / embedded-fashion models ignore it).",
                    },
                ),
            },
            "optional": {
                "prompts": (PROMPTS, {"tooltip": "Designed prompts from Design prompts (replace the prompt text)."})
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")  # the session's state changes outside the graph

    def sample(self, pipeline, encoder, session, prompt, count, seed, steps, guidance, prompts=None, unique_id=None):
        if not isinstance(pipeline, PipelineHandle):
            raise ValueError("pipeline must come from Load pipeline or Update LoRA")
        lines = list(prompts) if prompts else [line.strip() for line in prompt.splitlines()] or [""]
        active = _session(session, encoder)
        candidates, images = registry.loop(active.session, pipeline).sample(
            count,
            active.fresh_seed(seed),
            lines or [""],
            num_inference_steps=steps,
            guidance_scale=guidance,
            on_step=comfy.progress(steps, unique_id),
            check=comfy.check_interrupted,
        )
        return (to_comfy(images), candidates)


class DesignPrompts(SessionInput):
    DESCRIPTION = (
        "ED-PBRL: design K prompts per question from word lists (one slot per line) by Frank-Wolfe over word features."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (PROMPTS, "STRING")
    RETURN_NAMES = ("prompts", "design")
    OUTPUT_TOOLTIPS = (
        "K designed prompts per question (feed Sample candidates).",
        "The design's objective and Frank-Wolfe gap.",
    )
    FUNCTION = "design"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "session": SESSION,
                "encoder": (
                    ENCODER,
                    {"tooltip": "From Feature encoder (word features come from this session's samples)."},
                ),
                "slots": (
                    "STRING",
                    {
                        "default": "red, blue, green, yellow\ncircle, square, star, triangle\nfilled, outline",
                        "multiline": True,
                        "tooltip": "One slot per line, words separated by commas; each slot may also stay blank.",
                    },
                ),
                "base_prompt": ("STRING", {"default": "", "tooltip": "Text put before the designed words."}),
                "k": ("INT", {"default": 2, "min": 2, "max": 8, "tooltip": "Prompts per question."}),
                "budget": ("INT", {"default": 20, "min": 1, "max": 1000, "tooltip": "Episodes the design is for (T)."}),
                "questions": (
                    "INT",
                    {"default": 1, "min": 1, "max": 32, "tooltip": "Questions to sample from the design."},
                ),
                "seed": _seed_input(
                    "Seed for sampling prompts from the design; each later run continues after the session's samples, so queueing again asks new questions."
                ),
                "adaptive": (
                    "BOOLEAN",
                    {"default": True, "tooltip": "Re-design around the current reward posterior (θ-aware)."},
                ),
            },
            "optional": {
                "pipeline": (
                    PIPELINE,
                    {"tooltip": "Samples a few images per word the session has not seen yet, for the word features."},
                )
            },
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")

    def design(self, session, encoder, slots, base_prompt, k, budget, questions, seed, adaptive, pipeline=None):
        words = [[w.strip() for w in line.split(",") if w.strip()] for line in slots.splitlines() if line.strip()]
        if not words:
            raise ValueError("slots is empty: write one slot per line, words separated by commas")
        active = _session(session, encoder)
        if pipeline is not None:
            if not isinstance(pipeline, PipelineHandle):
                raise ValueError("pipeline must come from Load pipeline or Update LoRA")
            registry.loop(active.session, pipeline).sample_word_examples(words, base_prompt)
        prompt_sets, design = active.design_prompts(
            words,
            k=k,
            budget=budget,
            n_queries=questions,
            base_prompt=base_prompt,
            seed=active.fresh_seed(seed),
            adaptive=adaptive,
        )
        prompts = [p for group in prompt_sets for p in group]
        text = (
            f"{design.criterion}-optimal objective {design.objective_:.4g}, best Frank-Wolfe gap {design.best_gap_:.3g}\n"
            + "\n".join(" | ".join(group) for group in prompt_sets)
        )
        return (prompts, text)


class SelectQuery(SessionInput):
    DESCRIPTION = "Choose the most informative pair or K-set (Fisher information of the choice model) from candidates or any IMAGE batch."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", QUERY, "FLOAT")
    RETURN_NAMES = ("options", "query", "information_gain")
    OUTPUT_TOOLTIPS = (
        "The chosen options as an IMAGE batch.",
        "The question (queued in the store).",
        "Expected information gain (nats).",
    )
    FUNCTION = "select"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "k": ("INT", {"default": 2, "min": 2, "max": 8, "tooltip": "Options per question (2 = A/B)."}),
                "strategy": (
                    sorted(STRATEGIES),
                    {"default": DEFAULT_STRATEGY, "tooltip": "d_optimal: θ-aware D-optimal design (default)."},
                ),
            },
            "optional": {
                "candidates": (CANDIDATES, {"tooltip": "From Sample candidates."}),
                "images": (
                    "IMAGE",
                    {"tooltip": "Any IMAGE batch (e.g. from a KSampler graph); needs encoder and session."},
                ),
                "encoder": (ENCODER, {"tooltip": "Feature encoder for an IMAGE batch."}),
                "session": SESSION,
                "prompt": (
                    "STRING",
                    {"default": "", "tooltip": "The prompt the IMAGE batch was made with (stored with it)."},
                ),
            },
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")

    def select(self, k, strategy, candidates=None, images=None, encoder=None, session="default", prompt=""):
        if candidates is None:
            if images is None or encoder is None:
                raise ValueError("connect candidates (from Sample candidates), or images and an encoder")
            batch = to_numpy(images)
            if len(batch) < 2:
                raise ValueError(f"the IMAGE batch has {len(batch)} image; a question needs at least 2 candidates")
            candidates = _session(session, encoder).add_candidates(
                batch, [prompt] * len(batch), generator={"source": "IMAGE input"}
            )
        if not isinstance(candidates, Candidates):
            raise ValueError("candidates must come from Sample candidates")
        if k > len(candidates.ids):
            raise ValueError(f"k={k} is larger than the {len(candidates.ids)} candidates; sample more or lower k")
        active = _session(candidates.session)
        [query] = active.next_queries(k=k, candidate_ids=candidates.ids, strategy=strategy)
        options = active.question_images(query.id)
        return (
            to_comfy(options),
            QueryToken(query.id, active.session, len(query.candidates)),
            float(query.information_gain),
        )


class Ask:
    DESCRIPTION = "Show the question on this node and wait for the answer (A / B / tie / skip / both bad, or 1..K). Cancel always ends the wait."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING", ANSWER)
    RETURN_NAMES = ("answer", "answer_record")
    OUTPUT_TOOLTIPS = (
        "The answer: an option index (0 = A), tie, skip, both_bad, or pending.",
        "The stored answer for Record.",
    )
    FUNCTION = "ask"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "query": (QUERY, {"tooltip": "From Select query."}),
                "mode": (
                    ["wait", "answer later"],
                    {
                        "default": "wait",
                        "tooltip": "wait: block until answered or cancelled; answer later: queue the question in the store and continue.",
                    },
                ),
                "timeout_s": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 86400,
                        "tooltip": "0 = no timeout (wait until answered or cancelled).",
                    },
                ),
                "on_timeout": (
                    ["leave pending", "skip"],
                    {
                        "default": "leave pending",
                        "tooltip": "After a timeout: keep the question for later, or record a skip.",
                    },
                ),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")

    def ask(self, query, mode, timeout_s, on_timeout, unique_id=None):
        if not isinstance(query, QueryToken):
            raise ValueError("query must come from Select query")
        active = _session(query.session)
        options = active.question_images(query.id)
        images = comfy.save_preview(options, f"edpbrl_q{query.id}")
        info = {"node": unique_id, "query": query.id, "session": query.session, "k": len(options), "images": images}
        ui = {"edpbrl_query": [info]}
        if mode == "answer later" or not active.is_open(query.id):
            record = active.answer_of(query.id)
            return {
                "ui": ui,
                "result": (
                    record.choice if record else "pending",
                    AnswerToken(query.id, query.session, record.choice if record else None),
                ),
            }
        waiting = BROKER.register(query.id, query.session, unique_id, info)
        comfy.send("edpbrl-query", info)
        record = BROKER.wait(
            waiting, timeout=timeout_s or None, check=comfy.check_interrupted, poll=lambda: active.answer_of(query.id)
        )
        if record is None and on_timeout == "skip":
            record = active.answer(query.id, "skip")
        label = active.describe_answer(record) if record else "pending"
        comfy.send(
            "edpbrl-answered",
            {"node": unique_id, "query": query.id, "answer": record.choice if record else "pending", "label": label},
        )
        choice = record.choice if record else "pending"
        return {"ui": ui, "result": (choice, AnswerToken(query.id, query.session, None if record is None else choice))}


class RecordAnswer:
    DESCRIPTION = (
        "Make sure the answer is stored, refit the reward model, and report answers, accuracy estimate and stop signal."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING", REWARD)
    RETURN_NAMES = ("status", "reward")
    OUTPUT_TOOLTIPS = (
        "Answers so far, expected accuracy, stop signal, learned taste.",
        "The refitted reward model (for Update LoRA).",
    )
    FUNCTION = "record"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"answer_record": (ANSWER, {"tooltip": "From Ask."})}}

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")

    def record(self, answer_record):
        if not isinstance(answer_record, AnswerToken):
            raise ValueError("answer_record must come from Ask")
        active = _session(answer_record.session)
        model = active.refit()
        status = active.status_text()
        if answer_record.choice is None:
            status = f"question {answer_record.query} is pending (answer it later)\n" + status
        return (status, RewardToken(answer_record.session, model.n_answers_))
