"""``PersonalizationMixin``: active preference personalization for any diffusers pipeline with a UNet.

Like diffusers' loader mixins it has no ``__init__``, names its target in a class attribute and
adds verb-first methods::

    pipe = personalize(StableDiffusionPipeline.from_pretrained(folder))   # shares weights, copies none
    pipe.start_personalization("prefs.db", session="ana")
    pipe.sample_candidates(16, prompts=["a castle"])
    q = pipe.next_query()                                     # Fisher-optimal pair
    pipe.submit_answer(q.id, 0)                               # committed before it returns
    pipe.update_lora()                                        # DPO + reward distillation
    pipe.save_personalization("out/")                         # diffusers + kohya (ComfyUI) files

The state lives in a :class:`~edpbrl_plugin.session.PersonalizationSession` backed by the store, so a
session resumes in another process exactly where it stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .features import FeatureEncoder
from .personalize.adapters import ADAPTER_NAME, has_adapter
from .personalize.export import load_lora, save_diffusers, save_kohya
from .personalize.updater import UpdateConfig, UpdateReport
from .session import Candidates, PersonalizationSession
from .store import PreferenceStore, QueryRecord
from .strategies import DEFAULT_STRATEGY


class PersonalizationMixin:
    """Adds ``start_personalization``, ``sample_candidates``, ``next_query``, ``submit_answer``,
    ``update_reward``, ``update_lora``, ``personalization_status``, ``save_personalization`` and
    ``load_personalization`` to a pipeline whose ``unet`` takes the preference LoRA."""

    _personalization_component = "unet"

    @property
    def personalization(self) -> PersonalizationSession:
        session = getattr(self, "_edpbrl_session", None)
        if session is None:
            raise RuntimeError("no personalization session; call start_personalization(store, session) first")
        return session

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
        self._edpbrl_session = PersonalizationSession(store, session, user, encoder, strategy)
        self._edpbrl_prompts = list(prompts) or [""]
        self._edpbrl_update_config = update_config or UpdateConfig.for_pipeline(self)
        versions = self._edpbrl_session.store.lora_versions(session)
        if versions:
            self.load_personalization(versions[-1].file)
        return self._edpbrl_session

    def sample_candidates(self, n: int = 16, prompts: Sequence[str] | None = None, seed: int = 0,
                          **pipe_kwargs) -> Candidates:
        """Sample ``n`` images (prompts cycled), store them with their features; returns the batch."""
        candidates, _ = self.personalization.sample_candidates(self, n, prompts or self._edpbrl_prompts, seed, **pipe_kwargs)
        return candidates

    def next_query(self, k: int = 2, batch: int = 1, candidate_ids: Sequence[int] | None = None,
                   words: list[list[str]] | None = None, seed: int | None = None) -> QueryRecord | list[QueryRecord]:
        """The most informative question(s) among the latest candidates.

        With ``words`` (one word list per prompt slot) the options are instead images of prompts
        designed by ED-PBRL: ``k`` designed prompts are sampled, stored, and asked as one question.
        """
        session = self.personalization
        if words is not None:
            prompt_sets, _ = session.design_prompts(words, k=k, n_queries=batch, base_prompt=self._edpbrl_prompts[0],
                                                    seed=seed or 0, adaptive=True)
            queries = []
            for i, prompts in enumerate(prompt_sets):
                candidates, _ = session.sample_candidates(self, k, prompts, seed=(seed or 0) + 1000 * i)
                queries.append(session.store.add_query(session.session, candidates.ids, strategy="ed_pbrl_design"))
        else:
            queries = session.next_queries(k=k, batch=batch, candidate_ids=candidate_ids, seed=seed)
        return queries[0] if batch == 1 else queries

    def submit_answer(self, query_id: int, answer, latency: float | None = None):
        """Record an answer (an option index, "tie", "skip", "both_bad", "like" or "dislike")."""
        return self.personalization.answer(query_id, answer, latency)

    def update_reward(self):
        """Refit the reward model on every answer; returns the :class:`~edpbrl_plugin.choice.ChoiceModel`."""
        return self.personalization.refit()

    def update_lora(self, progress: bool = True, **config) -> UpdateReport:
        """One LoRA update from all answers (default: DPO + learned-reward distillation); saved as a new version."""
        if config:
            self._edpbrl_update_config = UpdateConfig(**{**vars(self._edpbrl_update_config), **config})
        report, _ = self.personalization.update_lora(self, self._edpbrl_update_config, self._edpbrl_prompts, progress)
        return report

    def personalization_status(self) -> dict:
        """Answers so far, the posterior stop signal, the learned taste, LoRA version and drift."""
        return self.personalization.status()

    def save_personalization(self, folder: str | Path, kohya_name: str | None = None) -> dict[str, Path]:
        """Write the current adapter in diffusers format and as a kohya file (ComfyUI's LoraLoader)."""
        unet = getattr(self, self._personalization_component)
        if not has_adapter(unet, ADAPTER_NAME):
            raise RuntimeError("nothing to save: no preference LoRA has been trained or loaded yet")
        folder = Path(folder)
        session = getattr(self, "_edpbrl_session", None)
        metadata = {"session": session.session, "answers": session.model.n_answers_} if session else {}
        diffusers_file = save_diffusers(self, folder, metadata=metadata)
        kohya = save_kohya(unet, folder / (kohya_name or "edpbrl_kohya.safetensors"), metadata=metadata)
        return {"diffusers": diffusers_file, "kohya": kohya}

    def load_personalization(self, path: str | Path, scale: float = 1.0) -> None:
        """Load a saved preference LoRA (diffusers folder or file, or kohya file) at ``scale``."""
        load_lora(self, path, ADAPTER_NAME, scale)


def personalize(pipe):
    """The same pipeline with :class:`PersonalizationMixin` added, sharing every component (no weight copy)."""
    if isinstance(pipe, PersonalizationMixin):
        return pipe
    cls = type(pipe)
    personalized = type(f"Personalized{cls.__name__}", (cls, PersonalizationMixin), {})
    return personalized.from_pipe(pipe)
