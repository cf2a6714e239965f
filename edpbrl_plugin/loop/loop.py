"""THE personalization loop: sample candidates -> ask the most informative questions -> record the answers ->
update the LoRA -> sample again.

One implementation drives the demo, the alignment benchmark (our variants and PAPA's like/dislike loop), the
diffusers mixin and ComfyUI's nodes. A variant is a setting of :class:`PersonalizationLoop` (options per
question, question strategy, base-model share of the candidates, the update's :class:`UpdateConfig`), never a
second copy of the loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..storage.store import AnswerRecord, LoraVersion, QueryRecord
from ..tuning.adapters import adapter_state, load_adapter_state
from ..tuning.sampling import cycle, sample_images
from ..tuning.updater import LoraUpdater, UpdateConfig, UpdateReport
from .session import Candidates, PersonalizationSession
from .training import training_data
from .versions import save_version

#: What answers a question: its options ``[K, H, W, 3]`` in 0..1 -> an answer of the vocabulary
#: (a position, "tie", "skip", "both_bad", or "like" / "dislike" for one image).
Asker = Callable[[np.ndarray], object]


@dataclass
class Check:
    """The person's verdict on an update: check questions (the tuned and the base model's sample of one seed),
    the tuned model's win rate on them (None: no scoring answer) and whether the update was rolled back."""

    questions: list[QueryRecord]
    answers: list[AnswerRecord]
    win_rate: float | None
    rolled_back: bool
    version: LoraVersion | None = None  # the version saved by a rollback


@dataclass
class Round:
    """What one :meth:`PersonalizationLoop.run_round` did, with the seconds each stage took. ``questions`` and
    ``answers`` include the check's."""

    candidates: Candidates
    questions: list[QueryRecord]
    answers: list[AnswerRecord]
    report: UpdateReport
    version: LoraVersion | None
    seconds: dict[str, float] = field(default_factory=dict)
    check: Check | None = None


class PersonalizationLoop:
    """The loop for one session and one pipeline.

    Args:
        session: the :class:`PersonalizationSession` (state in the store).
        pipe: a diffusers pipeline with a UNet (the embedded model, SD, SDXL).
        update: the :class:`UpdateConfig` of every LoRA update (default: sized for ``pipe``).
        prompts: prompts cycled over each batch of samples (``[""]``: unconditional).
        k: options per question: 2 = A/B (with "tie"), K >= 3 = "which of these K?", 1 = like / dislike of each
            sampled image (PAPA's feedback).
        strategy: question strategy (None: the session's, ``d_optimal`` by default).
        base_share: fraction of each batch (its first seeds) sampled from the base model (adapter off), so
            questions keep showing what the base makes after an update lost it.
        num_inference_steps, guidance_scale: sampling settings (None: the pipeline's defaults).
        checks: questions of each round spent on checking its update (:meth:`check`): the person compares the
            tuned and the base model's sample of one seed; an update the person does not prefer is rolled back.
    """

    def __init__(
        self,
        session: PersonalizationSession,
        pipe,
        update: UpdateConfig | None = None,
        prompts: Sequence[str] = ("",),
        k: int = 2,
        strategy: str | None = None,
        base_share: float = 0.0,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        checks: int = 0,
    ):
        if isinstance(checks, bool) or not isinstance(checks, int) or checks < 0:
            raise ValueError(f"checks must be a whole number >= 0 (questions per round), got {checks!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an integer >= 1 (options per question; 1 = like/dislike), got {k!r}")
        if not 0.0 <= base_share <= 1.0:
            raise ValueError(f"base_share must be a fraction in [0, 1], got {base_share}")
        self.session = session
        self.pipe = pipe
        self.config = update or UpdateConfig.for_pipeline(pipe)
        self.prompts = list(prompts) or [""]
        self.k = k
        self.strategy = strategy
        self.base_share = base_share
        self.sampling = {"num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale}
        self.checks = checks
        self._updater: LoraUpdater | None = None

    @property
    def updater(self) -> LoraUpdater:
        """The LoRA updater of this loop's pipeline (built on first use; rebuilt when the settings change)."""
        if self._updater is None:
            draws, seed = self.config.reward_draws, self.config.seed
            self._updater = LoraUpdater(
                self.pipe,
                self.config,
                reward_fn=lambda images: self.session.reward_draws(images, draws, seed),
                prompts=self.prompts,
            )
        return self._updater

    @property
    def min_timestep(self) -> int:
        """0, or EPAPA's first tuned timestep: images come from the model as the person will use it."""
        return self.config.min_timestep

    # ------------------------------------------------------------------ the steps
    def sample(
        self,
        n: int,
        seed: int = 0,
        prompts: Sequence[str] | None = None,
        base_share: float | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        on_step: Callable[[int, int], None] | None = None,
        check: Callable[[], None] | None = None,
    ) -> tuple[Candidates, np.ndarray]:
        """Sample ``n`` candidates (prompts cycled, seeds ``seed .. seed+n-1``), store them with their features.

        Returns the stored batch and its images ``[n, H, W, 3]`` in 0..1. Steps and guidance given here override
        the loop's for this batch. ``on_step(done, total)`` reports the denoising steps of the whole batch (a
        host's progress bar); ``check()`` may cancel between steps.
        """
        if n < 1:
            raise ValueError("n must be >= 1")
        share = self.base_share if base_share is None else base_share
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"base_share must be a fraction in [0, 1], got {share}")
        chosen, seeds = cycle(prompts or self.prompts, n), list(range(seed, seed + n))
        n_base = round(n * share)
        parts = [(lo, hi, lo < n_base) for lo, hi in ((0, n_base), (n_base, n)) if hi > lo]
        given = {"num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale}
        settings = {
            k: v
            for k, v in {**self.sampling, **{k: v for k, v in given.items() if v is not None}}.items()
            if v is not None
        }
        chunks = []
        for part, (lo, hi, base) in enumerate(parts):
            report = None
            if on_step is not None:

                def report(done, total, offset=part):
                    on_step(offset * total + done, len(parts) * total)

            chunks.append(
                sample_images(
                    self.pipe,
                    chosen[lo:hi],
                    seeds[lo:hi],
                    **settings,
                    adapters=not base,
                    min_timestep=self.min_timestep,
                    on_step=report,
                    check=check,
                )
            )
        images = np.concatenate(chunks)
        generator = {
            "pipeline": type(self.pipe).__name__,
            "seed": seed,
            **settings,
            **({"base_share": share} if n_base else {}),
        }
        return self.session.add_candidates(images, chosen, seeds, generator), images

    def ask(
        self,
        n: int = 1,
        seed: int | None = None,
        candidate_ids: Sequence[int] | None = None,
        k: int | None = None,
        strategy: str | None = None,
    ) -> list[QueryRecord]:
        """Queue ``n`` questions about the candidates (default: the latest batch): the most informative K-sets,
        or (k = 1) a like / dislike question on each of the first ``n`` candidates."""
        k = k or self.k
        if k == 1:
            ids = list(candidate_ids) if candidate_ids is not None else self.session.latest_candidates()
            return [self.session.rating_query(c) for c in ids[:n]]
        return self.session.next_queries(
            k=k, batch=n, candidate_ids=candidate_ids, strategy=strategy or self.strategy, seed=seed
        )

    def ask_designed(
        self, words: list[list[str]], k: int | None = None, n: int = 1, seed: int = 0, base_prompt: str | None = None
    ) -> list[QueryRecord]:
        """ED-PBRL: ``n`` questions whose ``k`` options are images of prompts designed by Frank-Wolfe over the
        word slots ``words`` (θ-aware), each option sampled and stored, then asked as one question."""
        k = k or max(self.k, 2)
        base = self.prompts[0] if base_prompt is None else base_prompt
        prompt_sets, _ = self.session.design_prompts(
            words, k=k, n_queries=n, base_prompt=base, seed=seed, adaptive=True
        )
        questions = []
        for i, prompts in enumerate(prompt_sets):
            candidates, _ = self.sample(k, seed + 1000 * i, prompts, base_share=0.0)
            questions.append(self.session.designed_query(candidates.ids))
        return questions

    def sample_word_examples(
        self,
        words: list[list[str]],
        base_prompt: str = "",
        per_word: int = 4,
        seed: int = 0,
        on_step: Callable[[int, int], None] | None = None,
    ) -> int:
        """Sample ``per_word`` images of each word no stored prompt mentions yet (the word features of the
        prompt design come from them). Returns how many images were sampled."""
        prompts = self.session.missing_word_prompts(words, base_prompt, per_word)
        if prompts:
            self.sample(len(prompts), seed, prompts, base_share=0.0, on_step=on_step)
        return len(prompts)

    def record(self, query_id: int, answer, latency: float | None = None) -> AnswerRecord:
        """Store an answer (committed before this returns); the reward model refits on next use."""
        return self.session.answer(query_id, answer, latency)

    def update(
        self,
        config: UpdateConfig | None = None,
        progress: bool = False,
        on_step: Callable[[int, int], None] | None = None,
        check: Callable[[], None] | None = None,
    ) -> tuple[UpdateReport, LoraVersion | None]:
        """One LoRA update from every answer so far; a changed adapter is saved as the session's next version.

        ``config`` replaces the loop's update settings from now on. ``check()`` cancels by raising; the adapter
        is then put back as it was, so the pipeline still matches its version.
        """
        if config is not None and config != self.config:
            self.config, self._updater = config, None
        updater = self.updater
        updater.progress = progress
        pairs, ratings = training_data(self.session.store, self.session.session)
        report = updater.update(pairs, ratings, on_step=on_step, check=check)
        if not report.changed:
            return report, None
        version = save_version(
            self.pipe,
            self.session.store,
            self.session.session,
            report.method,
            self.session.model.n_answers_,
            report.drift,
            {"method": report.method, "drift": round(report.drift, 6), "epapa_min_timestep": updater.min_timestep},
        )
        return report, version

    def images(self, n: int, seed: int, prompts: Sequence[str] | None = None) -> np.ndarray:
        """``n`` images of the model as the person now gets it (seeds ``seed ..``), for evaluation; nothing stored."""
        return sample_images(
            self.pipe,
            cycle(prompts or self.prompts, n),
            range(seed, seed + n),
            **self.sampling,
            min_timestep=self.min_timestep,
        )

    def check(self, answer: Asker, n: int, seed: int, before: dict | None) -> Check:
        """Ask ``n`` check questions, each the tuned and the base model's sample of one seed and prompt (in a random
        order), and roll the adapter back to ``before`` (its state before the update being checked) when the
        person does not prefer the tuned model: a win rate below ½, ties counting half.

        Only the person's answers decide, so the check sees what they see (a broken image, a lost shape) even
        where the reward model's features cannot; its answers also train later updates of methods with a DPO term (DPO pairs).
        """
        tuned, _ = self.sample(n, seed, base_share=0.0)
        base, _ = self.sample(n, seed, base_share=1.0)
        order = np.random.default_rng(seed).random(n) < 0.5
        questions = [self.session.check_query(t, b, first) for t, b, first in zip(tuned.ids, base.ids, order)]
        records = [self.record(q.id, answer(self.session.question_images(q.id))) for q in questions]
        win_rate = self.session.check_win_rate({q.id for q in questions})
        rolled_back = before is not None and win_rate is not None and win_rate < 0.5
        version = None
        if rolled_back:
            load_adapter_state(self.pipe.unet, before)
            version = save_version(
                self.pipe,
                self.session.store,
                self.session.session,
                "rollback",
                self.session.model.n_answers_,
                None,
                {"method": "rollback", "check_win_rate": win_rate},
            )
        return Check(questions, records, win_rate, rolled_back, version)

    # ------------------------------------------------------------------ a whole round
    def run_round(
        self,
        answer: Asker,
        n_candidates: int,
        n_questions: int,
        seed: int,
        question_seed: int | None = None,
        progress: bool = False,
    ) -> Round:
        """Sample ``n_candidates``, ask ``n_questions`` about them, record what ``answer`` says to each (a person
        at a prompt, or a simulated one), then update the LoRA. With ``checks``, that many of the ``n_questions``
        check the update afterwards (and may roll it back)."""
        n_checks = min(self.checks, max(n_questions - 1, 0))
        n_questions -= n_checks
        seconds = {}
        start = time.perf_counter()
        candidates, _ = self.sample(n_candidates, seed)
        seconds["sample"] = time.perf_counter() - start
        start = time.perf_counter()
        questions = self.ask(n_questions, seed=question_seed, candidate_ids=candidates.ids)
        seconds["select"] = time.perf_counter() - start
        records, seconds["answer"] = [], 0.0
        for question in questions:
            start = time.perf_counter()
            records.append(
                self.record(
                    question.id, answer(self.session.question_images(question.id)), latency=time.perf_counter() - start
                )
            )
            seconds["answer"] += time.perf_counter() - start
        start = time.perf_counter()
        before = adapter_state(self.updater.unet) if n_checks else None  # the updater adds the adapter if missing
        report, version = self.update(progress=progress)
        seconds["update"] = time.perf_counter() - start
        check = None
        if n_checks and report.changed:
            start = time.perf_counter()
            check = self.check(answer, n_checks, seed + n_candidates, before)
            questions, records = questions + check.questions, records + check.answers
            seconds["check"] = time.perf_counter() - start
        return Round(candidates, questions, records, report, version, seconds, check)
