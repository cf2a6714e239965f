"""A personalization session: the loop's state, kept in the store and rebuilt from it.

sample candidates -> features -> choose questions (Fisher design) -> answers (committed first) ->
reward model -> LoRA update -> sample again. The diffusers mixin, the ComfyUI nodes and the demo
all drive this one class, so a simulated user and a person answer through the same path.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .choice import ChoiceModel
from .design import PromptDesign, WordSlots
from .features import FeatureEncoder, load_encoder
from .imaging import to_uint8
from .metrics import StopSignal, stop_signal
from .store import PreferenceStore, QueryRecord, StoreError, choices_to_answers
from .strategies import DEFAULT_STRATEGY, Query, make_strategy


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
        reg, tie_margin: the choice model's λ and tie band.
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
    ):
        self.store = store if isinstance(store, PreferenceStore) else PreferenceStore(store)
        self.session = session
        self.encoder = load_encoder(encoder) if isinstance(encoder, str) else encoder
        make_strategy(strategy)
        config = {"encoder": self.encoder.name, "feature_dim": self.encoder.dim, "strategy": strategy,
                  "reg": reg, "tie_margin": tie_margin}
        if self.store.has_session(session):
            stored = self.store.get_session(session).config
            if stored.get("encoder", self.encoder.name) != self.encoder.name or stored.get("feature_dim", self.encoder.dim) != self.encoder.dim:
                raise StoreError(
                    f"session {session!r} was recorded with encoder {stored.get('encoder')} "
                    f"({stored.get('feature_dim')}-d) but {self.encoder.name} ({self.encoder.dim}-d) was given; "
                    "use the same encoder or another session id"
                )
            config = {**config, **{k: stored[k] for k in ("strategy", "reg", "tie_margin") if k in stored}}
        else:
            self.store.create_session(session, user=user, config=config)
        self.config = config
        self._model: ChoiceModel | None = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ candidates
    def add_candidates(self, images, prompts: Sequence[str], seeds: Sequence[int | None] | None = None,
                       generator: dict | None = None) -> Candidates:
        """Store images ``[B, H, W, 3]`` (0..1) with their prompts, computing their features."""
        images = np.asarray(images)
        if images.ndim != 4 or len(images) != len(prompts):
            raise ValueError(f"images must be [B, H, W, 3] with one prompt each; got {images.shape} and {len(prompts)} prompts")
        features = self.encoder.encode(images)
        seeds = list(seeds) if seeds is not None else [None] * len(prompts)
        meta = {"batch": uuid.uuid4().hex[:12], **(generator or {})}
        ids = self.store.add_candidates(self.session, list(prompts), features=features, images=list(to_uint8(images)),
                                        seeds=seeds, generator=meta)
        return Candidates(self.session, ids, list(prompts), seeds, features)

    def sample_candidates(self, pipe, n: int, prompts: Sequence[str] = ("",), seed: int = 0,
                          num_inference_steps: int | None = None, guidance_scale: float | None = None,
                          on_step: Callable[[int, int], None] | None = None, base_share: float = 0.0) -> tuple[Candidates, np.ndarray]:
        """Sample ``n`` images with ``pipe`` (prompts cycled, seeds ``seed .. seed+n-1``) and store them.

        ``base_share``: the fraction of the batch (the first seeds) sampled with the preference adapters
        off, i.e. from the base model. Questions then keep covering what the base model makes, so a
        wrong early update (one that lost a liked attribute) can still be seen and corrected; questions
        on the tuned model's samples alone cannot show what it no longer makes.
        ``on_step(step, total)`` reports denoising progress over the whole batch (a host's progress bar).
        """
        import torch

        from .personalize.adapters import adapters_disabled

        if n < 1:
            raise ValueError("n must be >= 1")
        if not 0.0 <= base_share <= 1.0:
            raise ValueError(f"base_share must be a fraction in [0, 1], got {base_share}")
        prompts = list(prompts) or [""]
        chosen = [prompts[i % len(prompts)] for i in range(n)]
        n_base = round(n * base_share)
        kwargs = {k: v for k, v in (("num_inference_steps", num_inference_steps), ("guidance_scale", guidance_scale)) if v is not None}
        parts = [(lo, hi) for lo, hi in ((0, n_base), (n_base, n)) if hi > lo]
        chunks = []
        for part, (lo, hi) in enumerate(parts):
            callback = {}
            if on_step is not None:
                def report(pipeline, step, timestep, tensors, offset=part):
                    steps = len(pipeline.scheduler.timesteps)
                    on_step(offset * steps + step + 1, len(parts) * steps)
                    return tensors

                callback = {"callback_on_step_end": report}
            generators = [torch.Generator().manual_seed(seed + i) for i in range(lo, hi)]
            with adapters_disabled(pipe.unet) if lo < n_base else contextlib.nullcontext():
                chunks.append(pipe(prompt=chosen[lo:hi], generator=generators, output_type="np", **kwargs, **callback).images)
        images = np.concatenate([np.asarray(c, dtype=np.float32) for c in chunks])
        generator = {"pipeline": type(pipe).__name__, "seed": seed, **kwargs, **({"base_share": base_share} if n_base else {})}
        return self.add_candidates(images, chosen, list(range(seed, seed + n)), generator), images

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
        answers = [a for a in self.store.answers(self.session)]
        ids = sorted({c for a in answers for c in a.candidates})
        _, features = self.store.candidate_features(self.session, ids) if ids else ([], np.zeros((0, self.encoder.dim)))
        row_of = {c: i for i, c in enumerate(ids)}
        return features if len(ids) else np.zeros((1, self.encoder.dim)), choices_to_answers(answers, row_of)

    def refit(self) -> ChoiceModel:
        with self._lock:
            features, answers = self._model_data()
            model = ChoiceModel(reg=self.config["reg"], tie_margin=self.config["tie_margin"]).fit(features, answers)
            self._model = model
            if answers:
                self.store.save_snapshot(self.session, model.theta_, model.covariance_, model.bias_, model.n_answers_)
            return model

    def reward(self, images) -> np.ndarray:
        """Learned reward θ̂ᵀφ(x) of images ``[B, H, W, 3]``."""
        return self.model.reward(self.encoder.encode(images))

    # ------------------------------------------------------------------ questions
    def next_queries(self, k: int = 2, batch: int = 1, candidate_ids: Sequence[int] | None = None,
                     strategy: str | None = None, seed: int | None = None) -> list[QueryRecord]:
        """Choose ``batch`` questions of ``k`` options from the candidates (default: the latest batch) and queue them."""
        ids = list(candidate_ids) if candidate_ids is not None else self.latest_candidates()
        if len(ids) < 2:
            raise ValueError(f"session {self.session!r} has {len(ids)} candidates to choose from; sample at least 2")
        ids, features = self.store.candidate_features(self.session, ids)
        name = strategy or self.config["strategy"]
        rng = np.random.default_rng(seed if seed is not None else int(time.time_ns() % 2**32))
        queries: list[Query] = make_strategy(name).select_batch(features, self.model, batch=batch, k=k, rng=rng)
        return [self.store.add_query(self.session, [ids[i] for i in q.indices], q.strategy, q.information_gain)
                for q in queries]

    def rating_query(self, candidate_id: int) -> QueryRecord:
        """Queue a like/dislike question about one candidate (PAPA-style feedback)."""
        return self.store.add_query(self.session, [candidate_id], strategy="rating")

    def pending(self) -> list[QueryRecord]:
        return self.store.pending_queries(self.session)

    def answer(self, query_id: int, choice, latency: float | None = None):
        """Record an answer (committed before this returns) and update the reward model."""
        query = self.store.get_query(query_id)
        if query.session != self.session:
            raise StoreError(f"question {query_id} belongs to session {query.session!r}, not {self.session!r}")
        record = self.store.submit_answer(query_id, choice, latency)
        with self._lock:
            self._model = None  # refit lazily (Newton warm starts make it milliseconds)
        return record

    def design_prompts(self, words: list[list[str]], word_features: list[np.ndarray] | None = None, k: int = 2,
                       budget: int = 20, n_queries: int = 1, base_prompt: str = "", seed: int = 0,
                       adaptive: bool = False) -> tuple[list[list[str]], PromptDesign]:
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

    def sample_word_examples(self, pipe, words: list[list[str]], base_prompt: str = "", per_word: int = 4, seed: int = 0) -> int:
        """Sample ``per_word`` images for each word no stored candidate's prompt contains yet (for word features)."""
        prompts_seen = [r.prompt for r in self.store.candidates(self.session)]
        missing = [w for slot in words for w in slot if not any(_mentions(p, w) for p in prompts_seen)]
        prompts = [", ".join(p for p in (base_prompt, w) if p) for w in missing for _ in range(per_word)]
        if prompts:
            self.sample_candidates(pipe, len(prompts), prompts, seed)
        return len(prompts)

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
        lines = [f"session {s['session']}: {s['answers']} answers ({s['informative_answers']} informative), {s['pending']} pending"]
        if s["expected_accuracy"] is not None:
            lines.append(f"expected accuracy on the pool {s['expected_accuracy']:.2f}" + ("  -> you can stop" if s["stop"] else ""))
        if s["taste"]:
            lines.append(s["taste"])
        if s["lora_version"]:
            lines.append(f"LoRA v{s['lora_version']}, drift {s['drift']:.4f}" if s["drift"] is not None else f"LoRA v{s['lora_version']}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ LoRA training data
    def training_data(self):
        """(pairs, ratings) for the updater from every answer: winner vs each loser; likes/dislikes;
        "both bad" counts as a dislike of each option; ties and skips carry no update signal."""
        from .personalize.updater import PreferencePair, Rating

        records = {c.id: c for c in self.store.candidates(self.session)}
        cache: dict[int, np.ndarray] = {}

        def image(cid: int) -> np.ndarray:
            if cid not in cache:
                cache[cid] = self.store.load_image(records[cid]).astype(np.float32) / 255.0
            return cache[cid]

        pairs, ratings = [], []
        for answer in self.store.answers(self.session):
            ids = answer.candidates
            if answer.choice.isdigit():
                winner = ids[int(answer.choice)]
                pairs += [PreferencePair(image(winner), image(loser), records[winner].prompt, records[loser].prompt)
                          for loser in ids if loser != winner]
            elif answer.choice in ("like", "dislike"):
                ratings.append(Rating(image(ids[0]), 1 if answer.choice == "like" else -1, records[ids[0]].prompt))
            elif answer.choice == "both_bad":
                ratings += [Rating(image(c), -1, records[c].prompt) for c in ids]
        return pairs, ratings

    def lora_folder(self) -> Path:
        return self.store.path.with_name(self.store.path.stem + "_loras") / self.session

    # ------------------------------------------------------------------ LoRA updates
    def updater(self, pipe, config=None, prompts: Sequence[str] = ("",)):
        """The :class:`LoraUpdater` of ``pipe`` for this session (one per pipeline object)."""
        from .personalize.updater import LoraUpdater

        if not hasattr(self, "_updaters"):
            self._updaters = {}
        key = id(pipe)
        current = self._updaters.get(key)
        if current is None or (config is not None and current.config != config) or list(prompts) != current.prompts:
            if current is not None:
                config = config or current.config
            current = LoraUpdater(pipe, config, reward_fn=self.reward, prompts=prompts)
            self._updaters[key] = current
        return current

    def update_lora(self, pipe, config=None, prompts: Sequence[str] = ("",), progress: bool = False,
                    on_step: Callable[[int, int], None] | None = None, check: Callable[[], None] | None = None):
        """Run one LoRA update from every answer so far; a changed adapter is saved as a new version.

        Returns (report, LoraVersion or None). Files: ``<store>_loras/<session>/v<N>/`` (diffusers) and
        ``edpbrl_<session>_v<N>.safetensors`` (kohya) inside it.
        """
        from .personalize.export import save_diffusers, save_kohya

        updater = self.updater(pipe, config, prompts)
        updater.progress = progress
        pairs, ratings = self.training_data()
        report = updater.update(pairs, ratings, on_step=on_step, check=check)
        if not report.changed:
            return report, None
        version = self.store.next_lora_version(self.session)
        metadata = {"session": self.session, "answers": self.model.n_answers_, "version": version,
                    "method": report.method, "drift": round(report.drift, 6),
                    "epapa_min_timestep": updater.min_timestep}
        folder = self.lora_folder() / f"v{version}"
        save_diffusers(pipe, folder, metadata=metadata)
        kohya = save_kohya(pipe.unet, folder / f"edpbrl_{self.session}_v{version}.safetensors", metadata=metadata)
        record = self.store.add_lora_version(
            self.session, str(folder), report.method, self.model.n_answers_, report.drift, str(kohya), metadata
        )
        return report, record
