"""Custom ComfyUI types of the pack and tensor layout conversions.

Objects passed between nodes are small immutable tokens (ComfyUI caches outputs and shares them);
the state they refer to lives in the engine's store.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from edpbrl_plugin.hosting import registry

PIPELINE = "EDPBRL_PIPELINE"
ENCODER = "EDPBRL_ENCODER"
CANDIDATES = "EDPBRL_CANDIDATES"
PROMPTS = "EDPBRL_PROMPTS"
QUERY = "EDPBRL_QUERY"
ANSWER = "EDPBRL_ANSWER"
REWARD = "EDPBRL_REWARD"


@dataclass(frozen=True)
class QueryToken:
    id: int
    session: str
    k: int


@dataclass(frozen=True)
class AnswerToken:
    query: int
    session: str
    choice: str | None  # None while pending


@dataclass(frozen=True)
class RewardToken:
    session: str
    n_answers: int


def check_session(session: str) -> str:
    try:
        return registry.check_session_id(session)
    except ValueError as error:
        raise ValueError(str(error)) from error


def session_input_error(session, allow_empty: bool = False) -> bool | str:
    """``VALIDATE_INPUTS`` for a session widget: True, or the message the routes give for a bad id, so a bad
    name is refused when the prompt is queued, not halfway through a run."""
    if allow_empty and isinstance(session, str) and not session.strip():
        return True
    try:
        check_session(session.strip() if isinstance(session, str) else session)
    except ValueError as error:
        return str(error)
    return True


class SessionInput:
    """Base of the nodes with a ``session`` widget: ComfyUI calls ``VALIDATE_INPUTS`` when a prompt is queued, so a
    bad session name is refused there, with the message the routes give, not halfway through a run."""

    @classmethod
    def VALIDATE_INPUTS(cls, session="default"):
        return session_input_error(session)


def to_numpy(images) -> np.ndarray:
    """ComfyUI IMAGE ``[B, H, W, C]`` (0..1) -> float32 numpy; rejects anything else with a clear error."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (3, 4):
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise ValueError(f"images must be a ComfyUI IMAGE tensor [B, H, W, C], got {shape}")
    return images[..., :3].detach().float().cpu().clamp(0, 1).numpy()


def to_comfy(images: np.ndarray) -> torch.Tensor:
    """numpy ``[B, H, W, C]`` 0..1 -> ComfyUI IMAGE tensor."""
    return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).clamp(0, 1)
