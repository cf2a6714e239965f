"""``PersonalizationMixin``: active preference personalization for any diffusers pipeline with a UNet.

Like diffusers' loader mixins it has no ``__init__``, names its target in a class attribute and
adds verb-first methods::

    pipe = personalize(StableDiffusionPipeline.from_pretrained(folder))   # shares weights, copies none
    pipe.start_personalization("prefs.db", session="ana")
    pipe.sample_candidates(16, prompts=["a castle"])
    q = pipe.next_query()                                     # Fisher-optimal pair
    pipe.submit_answer(q.id, 0)                               # committed before it returns
    pipe.update_lora()                                        # learned-reward distillation
    pipe.save_personalization("out/")                         # diffusers + kohya (ComfyUI) files

Every call is a step of the one :class:`~edpbrl_plugin.loop.loop.PersonalizationLoop`; its state lives in a
:class:`~edpbrl_plugin.loop.session.PersonalizationSession` backed by the store, so a session resumes in
another process exactly where it stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..features import FeatureEncoder
from ..querying.strategies import DEFAULT_STRATEGY
from ..storage.store import PreferenceStore, QueryRecord
from ..tuning.export import load_lora
from ..tuning.updater import UpdateConfig, UpdateReport
from .loop import PersonalizationLoop
from .session import Candidates, PersonalizationSession
from .versions import load_version, write_lora


class PersonalizationMixin:
    """Adds ``start_personalization``, ``sample_candidates``, ``next_query``, ``submit_answer``,
    ``update_reward``, ``update_lora``, ``personalization_status``, ``save_personalization`` and
    ``load_personalization`` to a pipeline whose ``unet`` takes the preference LoRA."""

    _personalization_component = "unet"

    @property
    def personalization_loop(self) -> PersonalizationLoop:
        loop = getattr(self, "_edpbrl_loop", None)
        if loop is None:
            raise RuntimeError("no personalization session; call start_personalization(store, session) first")
        return loop

    @property
    def personalization(self) -> PersonalizationSession:
        return self.personalization_loop.session

    def start_personalization(
        self,
        store: str | Path | PreferenceStore,
        session: str,
        user: str = "default",
        encoder: FeatureEncoder | str = "embedded",
        strategy: str = DEFAULT_STRATEGY,
        prompts: Sequence[str] = ("",),
        update_config: UpdateConfig | None = None,
    ) -> PersonalizationSession:
        """Start or resume ``session``; a resumed session gets its latest LoRA version back."""
        if getattr(self, self._personalization_component, None) is None:
            raise ValueError(f"{type(self).__name__} has no `{self._personalization_component}` to personalize")
        state = PersonalizationSession(store, session, user, encoder, strategy)
        self._edpbrl_loop = PersonalizationLoop(state, self, update_config or UpdateConfig.for_pipeline(self), prompts)
        load_version(self, state.store, session)
        return state

    def sample_candidates(
        self,
        n: int = 16,
        prompts: Sequence[str] | None = None,
        seed: int = 0,
        base_share: float | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
    ) -> Candidates:
        """Sample ``n`` images (prompts cycled), store them with their features; returns the batch."""
        candidates, _ = self.personalization_loop.sample(
            n, seed, prompts, base_share, num_inference_steps, guidance_scale
        )
        return candidates

    def next_query(
        self,
        k: int = 2,
        batch: int = 1,
        candidate_ids: Sequence[int] | None = None,
        words: list[list[str]] | None = None,
        seed: int | None = None,
    ) -> QueryRecord | list[QueryRecord]:
        """The most informative question(s) among the latest candidates.

        With ``words`` (one word list per prompt slot) the options are instead images of prompts
        designed by ED-PBRL: ``k`` designed prompts are sampled, stored, and asked as one question.
        """
        loop = self.personalization_loop
        if words is not None:
            queries = loop.ask_designed(words, k=k, n=batch, seed=seed or 0)
        else:
            queries = loop.ask(batch, seed=seed, candidate_ids=candidate_ids, k=k)
        return queries[0] if batch == 1 else queries

    def submit_answer(self, query_id: int, answer, latency: float | None = None):
        """Record an answer (an option index, "tie", "skip", "both_bad", "like" or "dislike")."""
        return self.personalization_loop.record(query_id, answer, latency)

    def update_reward(self):
        """Refit the reward model on every answer; returns the :class:`~edpbrl_plugin.learning.choice.ChoiceModel`."""
        return self.personalization.refit()

    def update_lora(self, progress: bool = True, **config) -> UpdateReport:
        """One LoRA update from all answers (default: learned-reward distillation); saved as a new version.
        Keyword arguments change the loop's :class:`UpdateConfig` from now on (``learning_rate=1e-4``)."""
        loop = self.personalization_loop
        report, _ = loop.update(UpdateConfig(**{**vars(loop.config), **config}) if config else None, progress)
        return report

    def personalization_status(self) -> dict:
        """Answers so far, the posterior stop signal, the learned taste, LoRA version and drift."""
        return self.personalization.status()

    def save_personalization(self, folder: str | Path, kohya_name: str | None = None) -> dict[str, Path]:
        """Write the current adapter in diffusers format and as a kohya file (ComfyUI's LoraLoader)."""
        loop = getattr(self, "_edpbrl_loop", None)
        metadata = {"session": loop.session.session, "answers": loop.session.model.n_answers_} if loop else {}
        return write_lora(self, folder, kohya_name or "edpbrl_kohya.safetensors", metadata)

    def load_personalization(self, path: str | Path, scale: float = 1.0) -> None:
        """Load a saved preference LoRA (diffusers folder or file, or kohya file) at ``scale``."""
        load_lora(self, path, scale=scale)


def personalize(pipe):
    """The same pipeline with :class:`PersonalizationMixin` added, sharing every component (no weight copy)."""
    if isinstance(pipe, PersonalizationMixin):
        return pipe
    cls = type(pipe)
    personalized = type(f"Personalized{cls.__name__}", (cls, PersonalizationMixin), {})
    return personalized.from_pipe(pipe)
