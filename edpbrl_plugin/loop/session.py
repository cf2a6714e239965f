"""A personalization session: the loop's state, kept in the store and rebuilt from it.

Candidates with their features, the reward model fitted on every answer, the questions and their answers,
ED-PBRL prompt design and the status. The loop (:mod:`.loop`) samples images and updates the LoRA around it;
everything here needs only the store and the feature encoder, so it reopens exactly in another process.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..features import FeatureEncoder, load_encoder
from ..imaging import to_uint8
from ..learning import answers as vocabulary
from ..learning.choice import ChoiceModel
from ..learning.metrics import StopSignal, stop_signal
from ..querying.design import PromptDesign, WordSlots
from ..querying.strategies import DEFAULT_STRATEGY, Query, make_strategy
from ..storage.store import AnswerRecord, PreferenceStore, QueryRecord, StoreError

#: The strategy name of check questions (:meth:`PersonalizationSession.check_query`).
CHECK = "base_check"


def _mentions(prompt: str, phrase: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", prompt) is not None


@dataclass
class Candidates:
    """A batch of candidates of one session (what a "Sample candidates" step produces)."""

    session: str
    ids: list[int]
    prompts: list[str]
    seeds: list[int | None]
    features: np.ndarray


class PersonalizationSession:
    """The loop for one session of one store.

    Args:
        store: a :class:`PreferenceStore` or a path to one.
        session: session id (created on first use).
        user: who answers.
        encoder: a :class:`FeatureEncoder` or its name (``"embedded"``; ``"clip:/path"``).
        strategy: question selection strategy (default ``"d_optimal"``).
        reg, tie_margin, lapse: the choice model's λ, tie band and lapse ε (:class:`ChoiceModel`).
    """

    def __init__(
        self,
        store: PreferenceStore | str | Path,
        session: str,
        user: str = "default",
        encoder: FeatureEncoder | str = "embedded",
        strategy: str = DEFAULT_STRATEGY,
        reg: float = 1.0,
        tie_margin: float = 0.25,
        lapse: float = 0.0,
    ):
        self.store = store if isinstance(store, PreferenceStore) else PreferenceStore(store)
        self.session = session
        self.encoder = load_encoder(encoder) if isinstance(encoder, str) else encoder
        make_strategy(strategy)
        config = {
            "encoder": self.encoder.name,
            "feature_dim": self.encoder.dim,
            "strategy": strategy,
            "reg": reg,
            "tie_margin": tie_margin,
            "lapse": lapse,
        }
        if self.store.has_session(session):
            stored = self.store.get_session(session).config
            if (
                stored.get("encoder", self.encoder.name) != self.encoder.name
                or stored.get("feature_dim", self.encoder.dim) != self.encoder.dim
            ):
                raise StoreError(
                    f"session {session!r} was recorded with encoder {stored.get('encoder')} "
                    f"({stored.get('feature_dim')}-d) but {self.encoder.name} ({self.encoder.dim}-d) was given; "
                    "use the same encoder or another session id"
                )
            config = {**config, **{k: stored[k] for k in ("strategy", "reg", "tie_margin", "lapse") if k in stored}}
        else:
            self.store.create_session(session, user=user, config=config)
        self.config = config
        self._model: ChoiceModel | None = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ candidates
    def add_candidates(
        self, images, prompts: Sequence[str], seeds: Sequence[int | None] | None = None, generator: dict | None = None
    ) -> Candidates:
        """Store images ``[B, H, W, 3]`` (0..1) with their prompts, computing their features."""
        images = np.asarray(images)
        if images.ndim != 4 or len(images) != len(prompts):
            raise ValueError(
                f"images must be [B, H, W, 3] with one prompt each; got {images.shape} and {len(prompts)} prompts"
            )
        features = self.encoder.encode(images)
        seeds = list(seeds) if seeds is not None else [None] * len(prompts)
        meta = {"batch": uuid.uuid4().hex[:12], **(generator or {})}
        ids = self.store.add_candidates(
            self.session, list(prompts), features=features, images=list(to_uint8(images)), seeds=seeds, generator=meta
        )
        return Candidates(self.session, ids, list(prompts), seeds, features)

    def fresh_seed(self, seed: int) -> int:
        """``seed`` moved past every sample the session holds, so each round of a graph queued again and again
        asks about new images (round r of ``count`` samples starts at ``seed + r * count``) while the same store
        state and seed still give the same images."""
        return seed + self.store.count_candidates(self.session)

    def latest_candidates(self) -> list[int]:
        """Ids of the most recent candidate batch."""
        records = self.store.candidates(self.session)
        if not records:
            return []
        batch = records[-1].generator.get("batch")
        return [r.id for r in records if r.generator.get("batch") == batch]

    # ------------------------------------------------------------------ reward model
    @property
    def model(self) -> ChoiceModel:
        """The reward model fitted on every answer so far (refitted from the store: exact on reopen)."""
        with self._lock:
            if self._model is None:
                self.refit()
            return self._model

    def _model_data(self):
        # A check (tuned vs base sample of one seed) is lost for being broken as often as for the taste, which the
        # features cannot see: it trains the LoRA of methods with a DPO term and decides rollbacks, never the reward model.
        answers = [a for a in self.store.answers(self.session) if self.store.get_query(a.query).strategy != CHECK]
        ids = sorted({c for a in answers for c in a.candidates})
        _, features = self.store.candidate_features(self.session, ids) if ids else ([], np.zeros((0, self.encoder.dim)))
        row_of = {c: i for i, c in enumerate(ids)}
        decoded = [
            vocabulary.Answer(tuple(row_of[c] for c in a.candidates), vocabulary.to_outcome(a.choice)) for a in answers
        ]
        return features if len(ids) else np.zeros((1, self.encoder.dim)), decoded

    def choice_model(self) -> ChoiceModel:
        """An unfitted :class:`ChoiceModel` with this session's settings."""
        c = self.config
        return ChoiceModel(reg=c["reg"], tie_margin=c["tie_margin"], lapse=c.get("lapse", 0.0))

    def refit(self) -> ChoiceModel:
        with self._lock:
            features, answers = self._model_data()
            model = self.choice_model().fit(features, answers)
            self._model = model
            if answers:
                self.store.save_snapshot(self.session, model.theta_, model.covariance_, model.bias_, model.n_answers_)
            return model

    def reward(self, images) -> np.ndarray:
        """Learned reward θ̂ᵀφ(x) of images ``[B, H, W, 3]``."""
        return self.model.reward(self.encoder.encode(images))

    def reward_draws(self, images, n: int, seed: int = 0) -> np.ndarray:
        """``n`` draws θ ~ N(θ̂, V⁻¹) of the reward θᵀφ(x) of images ``[B, H, W, 3]`` -> ``[n, B]`` (the point
        estimate ``[1, B]`` when ``n`` is 0). The same ``seed`` and answers give the same draws."""
        features = self.encoder.encode(images)
        model = self.model
        if n == 0:
            return model.reward(features)[None]
        return model.sample_theta(n, rng=seed) @ np.asarray(features, dtype=np.float64).T

    # ------------------------------------------------------------------ questions
    def next_queries(
        self,
        k: int = 2,
        batch: int = 1,
        candidate_ids: Sequence[int] | None = None,
        strategy: str | None = None,
        seed: int | None = None,
    ) -> list[QueryRecord]:
        """Choose ``batch`` questions of ``k`` options from the candidates (default: the latest batch) and queue them."""
        ids = list(candidate_ids) if candidate_ids is not None else self.latest_candidates()
        if len(ids) < 2:
            raise ValueError(f"session {self.session!r} has {len(ids)} candidates to choose from; sample at least 2")
        ids, features = self.store.candidate_features(self.session, ids)
        name = strategy or self.config["strategy"]
        rng = np.random.default_rng(seed if seed is not None else int(time.time_ns() % 2**32))
        queries: list[Query] = make_strategy(name).select_batch(features, self.model, batch=batch, k=k, rng=rng)
        return [
            self.store.add_query(self.session, [ids[i] for i in q.indices], q.strategy, q.information_gain)
            for q in queries
        ]

    def rating_query(self, candidate_id: int) -> QueryRecord:
        """Queue a like/dislike question about one candidate (PAPA-style feedback)."""
        return self.store.add_query(self.session, [candidate_id], strategy="rating")

    def pending(self) -> list[QueryRecord]:
        return self.store.pending_queries(self.session)

    def question_images(self, query_id: int) -> np.ndarray:
        """The options of a question as shown, ``[K, H, W, 3]`` float32 in 0..1 (from the stored images)."""
        query = self.store.get_query(query_id)
        records = self.store.candidates(query.session, query.candidates)
        return np.stack([self.store.load_image(r) for r in records]).astype(np.float32) / 255.0

    def is_open(self, query_id: int) -> bool:
        """Whether the question still waits for its answer (not answered, skipped or withdrawn)."""
        return self.store.get_query(query_id).status == "pending"

    def answer_of(self, query_id: int) -> AnswerRecord | None:
        """The answer a question got (None while it is pending, or when it was withdrawn)."""
        return self.store.answer_to(query_id)

    def describe_answer(self, record: AnswerRecord) -> str:
        """An answer as the widget labels it ("A", "B", "option 3", "tie", ...)."""
        return vocabulary.label(record.choice, len(record.candidates))

    def answer(self, query_id: int, choice, latency: float | None = None):
        """Record an answer (committed before this returns) and update the reward model."""
        query = self.store.get_query(query_id)
        if query.session != self.session:
            raise StoreError(f"question {query_id} belongs to session {query.session!r}, not {self.session!r}")
        record = self.store.submit_answer(query_id, choice, latency)
        with self._lock:
            self._model = None  # refit lazily (Newton warm starts make it milliseconds)
        return record

    def design_prompts(
        self,
        words: list[list[str]],
        word_features: list[np.ndarray] | None = None,
        k: int = 2,
        budget: int = 20,
        n_queries: int = 1,
        base_prompt: str = "",
        seed: int = 0,
        adaptive: bool = False,
    ) -> tuple[list[list[str]], PromptDesign]:
        """ED-PBRL: K prompts per question, designed by Frank-Wolfe over word features.

        ``word_features`` default to the encoder features of the session's candidates whose prompts
        contain each word (words never seen get the mean feature). ``adaptive`` uses the current
        posterior precision (θ-aware re-design).
        """
        if word_features is None:
            word_features = self.word_features(words)
        slots = WordSlots.from_lists(words, word_features)
        prior = self.model.precision_ if adaptive and self.model.n_informative_ else None
        design = PromptDesign(k=k, budget=budget).fit(slots, prior)
        episodes = design.sample(n_queries, rng=seed)
        return [[slots.prompt(episode[q], base_prompt) for q in range(k)] for episode in episodes], design

    def check_query(self, tuned_id: int, base_id: int, tuned_first: bool) -> QueryRecord:
        """Queue a check: the tuned model's and the base model's sample of one seed and prompt, side by side."""
        ids = [tuned_id, base_id] if tuned_first else [base_id, tuned_id]
        return self.store.add_query(self.session, ids, strategy=CHECK)

    def check_win_rate(self, query_ids: Sequence[int]) -> float | None:
        """The tuned model's score on answered checks: a win 1, a tie or "both bad" ½, a loss 0 (skips left out);
        None when no check has an answer that scores."""
        scores = []
        for answer in self.store.answers(self.session):
            if answer.query not in query_ids or answer.choice == vocabulary.SKIP:
                continue
            if answer.choice in (vocabulary.TIE, vocabulary.BOTH_BAD):
                scores.append(0.5)
            else:
                tuned = self.store.candidates(self.session, [answer.candidates[int(answer.choice)]])[0]
                scores.append(0.0 if tuned.generator.get("base_share") else 1.0)
        return float(np.mean(scores)) if scores else None

    def designed_query(self, candidate_ids: Sequence[int]) -> QueryRecord:
        """Queue one question over candidates sampled from designed prompts (ED-PBRL)."""
        return self.store.add_query(self.session, list(candidate_ids), strategy="ed_pbrl_design")

    def missing_word_prompts(self, words: list[list[str]], base_prompt: str = "", per_word: int = 4) -> list[str]:
        """Prompts to sample, ``per_word`` each, for every word no stored candidate's prompt mentions yet."""
        prompts_seen = [r.prompt for r in self.store.candidates(self.session)]
        missing = [w for slot in words for w in slot if not any(_mentions(p, w) for p in prompts_seen)]
        return [", ".join(p for p in (base_prompt, w) if p) for w in missing for _ in range(per_word)]

    def word_features(self, words: list[list[str]]) -> list[np.ndarray]:
        """Mean feature of stored candidates whose prompt contains each word, centred on the overall mean."""
        records = self.store.candidates(self.session)
        ids, features = self.store.candidate_features(self.session)
        prompt_of = {r.id: r.prompt for r in records}
        mean = features.mean(axis=0) if len(ids) else np.zeros(self.encoder.dim)
        tables = []
        for slot in words:
            rows = []
            for word in slot:
                hits = [i for i, c in enumerate(ids) if _mentions(prompt_of.get(c, ""), word)]
                rows.append(features[hits].mean(axis=0) - mean if hits else np.zeros_like(mean))
            tables.append(np.stack(rows))
        return tables

    # ------------------------------------------------------------------ status
    def status(self) -> dict:
        answers = self.store.answers(self.session)
        model = self.model
        pool = self.latest_candidates()
        signal: StopSignal | None = None
        if len(pool) >= 2:
            _, features = self.store.candidate_features(self.session, pool)
            signal = stop_signal(model, features)
        versions = self.store.lora_versions(self.session)
        return {
            "session": self.session,
            "answers": len(answers),
            "informative_answers": model.n_informative_,
            "pending": len(self.pending()),
            "expected_accuracy": None if signal is None else signal.expected_accuracy,
            "max_pair_std": None if signal is None else signal.max_pair_std,
            "stop": None if signal is None else signal.should_stop(),
            "taste": self.encoder.describe(model.theta_),
            "lora_version": versions[-1].version if versions else 0,
            "drift": versions[-1].drift if versions else None,
        }

    def status_text(self) -> str:
        s = self.status()
        lines = [
            f"session {s['session']}: {s['answers']} answers ({s['informative_answers']} informative), {s['pending']} pending"
        ]
        if s["expected_accuracy"] is not None:
            lines.append(
                f"expected accuracy on the pool {s['expected_accuracy']:.2f}"
                + ("  -> you can stop" if s["stop"] else "")
            )
        if s["taste"]:
            lines.append(s["taste"])
        if s["lora_version"]:
            lines.append(
                f"LoRA v{s['lora_version']}, drift {s['drift']:.4f}"
                if s["drift"] is not None
                else f"LoRA v{s['lora_version']}"
            )
        return "\n".join(lines)
