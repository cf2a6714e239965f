"""Online LoRA updates from answers, by the method's :class:`~.objectives.Objective` (default, DPO, PAPA, EPAPA,
reward distillation).

Every update keeps the base model as the reference (adapter off), stops early when the reward of
fresh samples stops improving, restores the last good adapter on a NaN loss, and measures drift
from the base at each check, stopping (and restoring) when it passes ``drift_cap``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from .adapters import (
    ADAPTER_NAME,
    adapter_state,
    adapters_disabled,
    add_adapter,
    has_adapter,
    load_adapter_state,
    restart_adapter,
    trainable_parameters,
)
from .denoiser import Denoiser, concat_conditions, repeat_condition
from .drift import DriftMonitor
from .host import release_inference_tensors, with_autograd
from .losses import dpo_loss, effective_sample_size, elbo_weights, papa_loss, per_sample_mse, reward_tilt
from .objectives import METHODS, OBJECTIVES, Objective
from .pools import cached_pool, pool_key, shipped_pools
from .sampling import cycle, sample_images

BASE_POOL_SEED = 97_531  # the pool is a property of the base model and its prompts, shared by every session
CHECK_SEED = 1  # offset of the early-stopping check's seeds from ``UpdateConfig.seed * 7919``


@dataclass(frozen=True)
class PreferencePair:
    """A winner and a loser image (``[H, W, 3]`` in 0..1) with the prompts they were sampled from."""

    winner: np.ndarray
    loser: np.ndarray
    winner_prompt: str = ""
    loser_prompt: str = ""


@dataclass(frozen=True)
class Rating:
    """A like (+1) or dislike (−1) of one image."""

    image: np.ndarray
    label: int
    prompt: str = ""


@dataclass
class UpdateConfig:
    """Update settings. Defaults were tuned on the embedded model (``edpbrl bench align``);
    :meth:`for_pipeline` gives the defaults for any pipeline (latent ones such as Stable Diffusion get
    :data:`LATENT_DEFAULTS`)."""

    method: str = "default"
    rank: int = 4
    alpha: float = 4.0
    targets: list[str] | None = None
    learning_rate: float = 2e-3
    steps: int = 60
    batch_size: int = 8
    dpo_beta: float = 2000.0
    dpo_weight: float = 0.0  # of the DPO term in the default method (method "dpo": DPO alone, at weight 1)
    dpo_positive: float = 0.0  # λ of DPO-Positive: how much a rise of a winner's denoising error costs
    distill_samples: int = 1024
    distill_source: str = "base"  # "base": a cached pool of base-model samples; "current": fresh samples each update
    distill_temperature: float = 0.25  # τ as a fraction of the rewards' standard deviation
    # τ rises until the tilt spreads over at least this many pool samples (at most half the pool): the learned reward
    # of 30 answers also favours the shapes of the few liked examples it saw, and a narrower tilt copies them
    distill_min_ess: float = 128.0
    # posterior draws of the learned reward whose tilts distillation mixes (0: the point estimate's tilt alone).
    # The mixture keeps values the answers do not tell apart (liked digits the person calls a tie) at their base
    # share, but it is a flatter target: on digits alone it cost share (0.59 -> 0.49 at 30 answers); with
    # gate_timestep=400 it kept share and form (docs/benchmarks.md). Off until measured on the shapes model too
    reward_draws: int = 0
    distill_weight: float = 1.0
    # False (default): each update starts again from the base model (every lora_B zeroed) and fits all answers so
    # far. Distillation's target, the base pool tilted by the current reward, does not depend on the adapter, so
    # the adapter is that target's fit and nothing else: an early update fitted on few, noisy answers is not where
    # later ones start, and training does not pile up over rounds (warm starts lost well-formed images with
    # each round: docs/benchmarks.md)
    warm_start: bool = False
    papa_c_pref: float = 0.1
    papa_c_base: float = 0.009
    unlikelihood_cap: float = 2.0
    epapa_min_timestep: int = 400
    # the other methods' gate: their adapter trains and acts only at forward timesteps t >= this (0: everywhere).
    # The noisy steps decide what is drawn (a digit's class); leaving the rest to the base keeps its strokes clean.
    # A gated adapter needs this package's sampler (a plain LoRA loader applies it at every step), so it is opt-in
    gate_timestep: int = 0
    eval_every: int = 20
    eval_samples: int = 32
    # on the learned reward of fresh samples: off by default, since that reward cannot see a broken image and
    # distillation's target (the tilted base pool) cannot run away the way a reward-maximising update can
    early_stopping: bool = False
    patience: int = 2  # checks in a row whose reward is worse than the best by > tolerance standard errors
    tolerance: float = 2.0
    drift_cap: float = 0.5
    num_inference_steps: int = 20
    guidance_scale: float = 2.0
    sample_batch_size: int = 32
    seed: int = 0

    @classmethod
    def for_pipeline(cls, pipe, **overrides) -> UpdateConfig:
        """Defaults sized for ``pipe``, then ``overrides`` (``None`` values keep the default).

        A latent pipeline's sample costs ~100x an embedded one and its UNet is ~1000x larger, so it gets
        a lower learning rate and a smaller distillation pool and reward check.
        """
        latent = getattr(pipe, "vae", None) is not None
        settings = {**(LATENT_DEFAULTS if latent else {}), **{k: v for k, v in overrides.items() if v is not None}}
        return cls(**settings)

    @property
    def objective(self) -> Objective:
        return OBJECTIVES[self.method]

    @property
    def min_timestep(self) -> int:
        """The first tuned forward timestep (EPAPA's, or ``gate_timestep``): sampling and training use the adapter
        only from there."""
        return self.epapa_min_timestep if self.objective.gated else self.gate_timestep

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.distill_source not in ("base", "current"):
            raise ValueError(f"distill_source must be 'base' or 'current', got {self.distill_source!r}")
        if not 0 <= self.gate_timestep < 1000:
            raise ValueError(f"gate_timestep must be in [0, 1000) (0: no gate), got {self.gate_timestep}")
        if self.reward_draws < 0:
            raise ValueError(f"reward_draws must be >= 0 (0: the point estimate), got {self.reward_draws}")
        if self.steps < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError("steps and batch_size must be >= 1 and learning_rate > 0")


#: Defaults for latent pipelines (Stable Diffusion, SDXL), used by :meth:`UpdateConfig.for_pipeline`.
LATENT_DEFAULTS = {"learning_rate": 1e-4, "distill_samples": 32, "distill_min_ess": 8.0, "eval_samples": 8}


@dataclass
class UpdateReport:
    method: str
    steps: int = 0
    losses: list[float] = field(default_factory=list)
    reward_before: float | None = None
    reward_after: float | None = None
    drift: float = 0.0
    stopped: str | None = None
    n_pairs: int = 0
    n_ratings: int = 0
    distill_ess: float | None = None  # effective number of pool samples the distillation trains on
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return self.steps > 0

    def summary(self) -> str:
        if not self.changed:
            return f"no update: {self.stopped}"
        reward = ""
        if self.reward_before is not None and self.reward_after is not None:
            reward = f", reward of fresh samples {self.reward_before:.3f} -> {self.reward_after:.3f}"
        stop = f" (stopped: {self.stopped})" if self.stopped else ""
        pool = f", distilled from ~{self.distill_ess:.0f} pool samples" if self.distill_ess is not None else ""
        return (
            f"{self.method}: {self.steps} steps on {self.n_pairs} pairs / {self.n_ratings} ratings{pool}{reward}, "
            f"drift {self.drift:.4f}{stop}; {self.seconds:.1f} s"
        )


class LoraUpdater:
    """Runs updates of one pipeline's preference adapter.

    Args:
        pipe: a diffusers pipeline with a UNet (embedded, SD, SDXL).
        config: :class:`UpdateConfig`.
        reward_fn: images ``[B, H, W, 3]`` -> learned rewards ``[B]``, or ``[S, B]`` for S posterior draws of
            the reward (distillation then mixes each draw's tilt, :func:`reward_tilt`); needed for distillation
            and early stopping, without it those parts are skipped.
        prompts: the prompts fresh samples are drawn from.
        anchor_prompts: prompts for the drift check (default: ``prompts``).
    """

    @with_autograd
    def __init__(
        self,
        pipe,
        config: UpdateConfig | None = None,
        reward_fn: Callable | None = None,
        prompts: Sequence[str] = ("",),
        anchor_prompts: Sequence[str] | None = None,
    ):
        self.pipe = pipe
        self.config = config or UpdateConfig()
        self.reward_fn = reward_fn
        self.prompts = list(prompts) or [""]
        self.denoiser = Denoiser(pipe)
        self.unet = pipe.unet
        self._ensure_adapter()
        base_sampler = functools.partial(self._sample_images, adapters=False)
        self.drift = DriftMonitor(self.denoiser, base_sampler, anchor_prompts or self.prompts)
        self._weights = elbo_weights(self.denoiser)
        self._round = 0
        self._checked: tuple | None = None  # (adapter state, image size, its check samples)
        self._check: Callable[[], None] | None = None  # the host's cancel check while an update runs
        self._on_step: Callable[[int, int], None] | None = None  # the host's progress bar while an update runs
        self.progress = False
        self.image_size: tuple[int, int] | None = None  # latent pipelines sample at the size the user judged

    def _ensure_adapter(self) -> None:
        if not has_adapter(self.unet, ADAPTER_NAME):
            add_adapter(self.unet, self.config.rank, self.config.alpha, self.config.targets, seed=self.config.seed)

    # ------------------------------------------------------------------ sampling
    @property
    def min_timestep(self) -> int:
        return self.config.min_timestep

    def _sample_images(
        self, prompts: list[str], seed: int, show_progress: bool = False, adapters: bool = True
    ) -> np.ndarray:
        """Images for ``prompts`` with seeds ``seed, seed+1, ...`` (the one sampler), at the size the user judged.
        ``show_progress`` drives the host's progress bar with the denoising steps (the distillation pool: minutes
        for SD on a CPU); the host's cancel check runs after every denoising step."""
        size = self.image_size if self.denoiser.latent and self.image_size else None
        return sample_images(
            self.pipe,
            prompts,
            range(seed, seed + len(prompts)),
            self.config.num_inference_steps,
            self.config.guidance_scale,
            size=size,
            adapters=adapters,
            min_timestep=self.min_timestep if adapters else 0,
            batch_size=self.config.sample_batch_size,
            on_step=self._on_step if show_progress else None,
            check=self._check,
        )

    def sample(self, n: int, seed: int, prompts: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
        """``n`` images of the current (tuned) model and their prompts; EPAPA adapters are gated by timestep."""
        chosen = cycle(prompts or self.prompts, n)
        return self._sample_images(chosen, seed), chosen

    def _mean_reward(self) -> tuple[float, float] | None:
        """Mean learned reward of fresh samples at fixed seeds (the same every update), and its standard error.

        The samples of the adapter last checked are kept: an update that starts where the previous one ended
        re-scores them with the refitted reward instead of sampling them again.
        """
        if self.reward_fn is None:
            return None
        state = adapter_state(self.unet)
        kept = self._checked
        same = kept is not None and kept[1] == self.image_size and kept[0].keys() == state.keys()
        if same and all(torch.equal(kept[0][k], state[k]) for k in state):
            images = kept[2]
        else:
            images, _ = self.sample(self.config.eval_samples, self.config.seed * 7919 + CHECK_SEED)
            self._checked = (state, self.image_size, images)
        rewards = np.asarray(self.reward_fn(images), dtype=np.float64)
        rewards = rewards.mean(0) if rewards.ndim == 2 else rewards  # posterior draws: their mean
        return float(rewards.mean()), float(rewards.std(ddof=1) / np.sqrt(len(rewards))) if len(rewards) > 1 else 0.0

    def _distill_pool(self, seed: int) -> tuple[np.ndarray, list[str]]:
        """Images the learned reward re-weights for distillation.

        ``"base"`` (default): one cached pool of base-model samples. Weighted denoising on it fits
        p_base(x)·exp(r(x)/τ), the optimum of "maximise reward, stay close (KL) to the base", and every
        training image is a clean base sample, so repeated updates do not train on their own artefacts.
        ``"current"``: fresh samples of the tuned model each update (on-policy RWR; drifts faster).
        """
        if self.config.distill_source == "current":
            return self.sample(self.config.distill_samples, seed)
        return self.base_pool()

    def base_pool(self) -> tuple[np.ndarray, list[str]]:
        """``distill_samples`` base-model samples of the prompts (seeds from :data:`BASE_POOL_SEED`) and their
        prompts: sampled once per machine, then from the cache (:mod:`.pools`)."""
        prompts = cycle(self.prompts, self.config.distill_samples)
        settings = {
            "steps": self.config.num_inference_steps,
            "guidance": self.config.guidance_scale,
            "size": self.image_size if self.denoiser.latent else None,
        }
        images = cached_pool(
            pool_key(self.pipe, prompts, BASE_POOL_SEED, settings),
            lambda: self._sample_images(prompts, BASE_POOL_SEED, show_progress=True, adapters=False),
            shipped=shipped_pools(self.pipe),
        )
        return images, prompts

    # ------------------------------------------------------------------ losses
    def _errors(self, x0, condition, noise, t, epsilon_space: bool = False) -> torch.Tensor:
        x_t = self.denoiser.add_noise(x0, noise, t)
        prediction = self.denoiser.predict(x_t, t, condition)
        if epsilon_space:
            return per_sample_mse(self.denoiser.to_epsilon(prediction, x_t, t), noise)
        return per_sample_mse(prediction, self.denoiser.target(x0, noise, t))

    def _dpo_batch(self, data, gen) -> tuple:
        """A batch of preference pairs: winners then losers, each pair under one noise and timestep."""
        x_w, x_l, cond_w, cond_l = data
        idx = torch.randint(0, len(x_w), (min(self.config.batch_size, len(x_w)),), generator=gen)
        noise = torch.randn(x_w[idx].shape, generator=gen).to(x_w)
        t = self.denoiser.sample_timesteps(len(idx), gen, self.min_timestep)
        condition = concat_conditions(repeat_condition(cond_w, idx), repeat_condition(cond_l, idx))
        return torch.cat([x_w[idx], x_l[idx]]), condition, torch.cat([noise, noise]), torch.cat([t, t])

    def _distill_batch(self, data, gen) -> tuple:
        """A batch of pool images drawn with the reward-tilted probabilities."""
        x0_all, cond_all, probabilities = data
        idx = torch.multinomial(probabilities, self.config.batch_size, replacement=True, generator=gen)
        noise = torch.randn(x0_all[idx].shape, generator=gen).to(x0_all)
        t = self.denoiser.sample_timesteps(len(idx), gen, self.min_timestep)
        return x0_all[idx], repeat_condition(cond_all, idx), noise, t

    def _loss(self, terms: dict, gen) -> torch.Tensor:
        """One optimiser step's loss. The DPO pairs and the distillation batch share one UNet pass (one larger
        batch is cheaper than two on a CPU); DPO's reference errors are a second pass with the adapter off."""
        batches = {
            name: getattr(self, f"_{name}_batch")(terms[name], gen) for name in ("dpo", "distill") if name in terms
        }
        loss = self._papa_term(terms["papa"], gen) if "papa" in terms else torch.zeros(())
        if not batches:
            return loss
        x0, noise, t = (torch.cat([batch[i] for batch in batches.values()]) for i in (0, 2, 3))
        condition = functools.reduce(concat_conditions, [batch[1] for batch in batches.values()])
        errors = dict(zip(batches, self._errors(x0, condition, noise, t).split([len(b[0]) for b in batches.values()])))
        if "dpo" in batches:
            half = len(errors["dpo"]) // 2
            with torch.no_grad(), adapters_disabled(self.unet):
                ref = self._errors(*batches["dpo"])
            weight = self.config.dpo_weight if self.config.objective.distillation else 1.0
            loss = (
                loss
                + weight
                * dpo_loss(
                    errors["dpo"][:half],
                    errors["dpo"][half:],
                    ref[:half],
                    ref[half:],
                    self.config.dpo_beta,
                    self.config.dpo_positive,
                )[0]
            )
        if "distill" in batches:
            loss = loss + self.config.distill_weight * errors["distill"].mean()
        return loss

    def _papa_term(self, data, gen) -> torch.Tensor:
        x0_all, cond_all, labels_all = data
        idx = torch.randint(0, len(x0_all), (min(self.config.batch_size, len(x0_all)),), generator=gen)
        x0, condition, labels = x0_all[idx], repeat_condition(cond_all, idx), labels_all[idx]
        noise = torch.randn(x0.shape, generator=gen).to(x0)
        t = self.denoiser.sample_timesteps(len(idx), gen, self.min_timestep)
        x_t = self.denoiser.add_noise(x0, noise, t)
        eps = self.denoiser.to_epsilon(self.denoiser.predict(x_t, t, condition), x_t, t)
        with torch.no_grad(), adapters_disabled(self.unet):
            eps_base = self.denoiser.to_epsilon(self.denoiser.predict(x_t, t, condition), x_t, t)
        error, base_error = per_sample_mse(eps, noise), per_sample_mse(eps_base, noise)
        pull = per_sample_mse(eps, eps_base)
        c = self.config
        return papa_loss(
            error,
            base_error,
            pull,
            labels,
            self._weights.to(t.device)[t],
            c.papa_c_pref,
            c.papa_c_base,
            c.unlikelihood_cap,
        )

    # ------------------------------------------------------------------ the update
    def _prepare(self, pairs: Sequence[PreferencePair], ratings: Sequence[Rating], seed: int) -> dict:
        objective, terms = self.config.objective, {}
        dpo_weight = self.config.dpo_weight if objective.distillation else 1.0
        if pairs and objective.pairs and dpo_weight > 0:
            terms["dpo"] = (
                self.denoiser.encode_images(np.stack([p.winner for p in pairs])),
                self.denoiser.encode_images(np.stack([p.loser for p in pairs])),
                self.denoiser.condition([p.winner_prompt for p in pairs]),
                self.denoiser.condition([p.loser_prompt for p in pairs]),
            )
        if ratings and objective.ratings:
            terms["papa"] = (
                self.denoiser.encode_images(np.stack([r.image for r in ratings])),
                self.denoiser.condition([r.prompt for r in ratings]),
                torch.tensor([1.0 if r.label > 0 else -1.0 for r in ratings], device=self.denoiser.device),
            )
        if (
            self.reward_fn is not None
            and objective.distillation
            and (pairs or ratings or not objective.learns_from_answers)
        ):
            images, prompts = self._distill_pool(seed)
            rewards = torch.as_tensor(np.atleast_2d(np.asarray(self.reward_fn(images), dtype=np.float64)))
            if rewards.shape[1] > 1 and float(rewards.std(dim=1).max()) > 1e-6:
                probabilities = reward_tilt(rewards, self.config.distill_temperature, self.config.distill_min_ess)
                terms["distill"] = (
                    self.denoiser.encode_images(images),
                    self.denoiser.condition(prompts),
                    probabilities,
                )
        return terms

    @with_autograd
    def update(
        self,
        pairs: Sequence[PreferencePair] = (),
        ratings: Sequence[Rating] = (),
        on_step: Callable[[int, int], None] | None = None,
        check: Callable[[], None] | None = None,
    ) -> UpdateReport:
        """One update of the adapter from these answers (typically all answers so far).

        ``on_step(done, total)`` drives a host's progress bar: after every denoising step while a new
        distillation pool is sampled (``total`` = its denoising steps), then after every optimiser step
        (``total`` = ``steps``).
        ``check()`` is called after every optimiser step and every denoising step of the sampling
        inside the update; it cancels the update by raising (ComfyUI's interrupt), and the adapter is
        then put back as it was before the update, so the pipeline still matches its version.
        """
        release_inference_tensors(self.unet)  # weights or a LoRA version loaded under inference mode (ComfyUI)
        self._ensure_adapter()
        before = adapter_state(self.unet)
        self._check, self._on_step = check, on_step
        try:
            return self._update(pairs, ratings)
        except BaseException:
            load_adapter_state(self.unet, before)
            self.unet.eval()
            raise
        finally:
            self._check = self._on_step = None

    def _update(self, pairs: Sequence[PreferencePair], ratings: Sequence[Rating]) -> UpdateReport:
        start = time.perf_counter()
        c = self.config
        self._round += 1
        seed = c.seed * 7919 + self._round
        report = UpdateReport(c.method, n_pairs=len(pairs), n_ratings=len(ratings))
        missing = c.objective.missing(len(pairs), len(ratings), self.reward_fn is not None)
        if missing:
            report.stopped = missing
            return report
        self.unet.set_adapter(ADAPTER_NAME)
        if not c.warm_start:
            restart_adapter(self.unet)
        judged = pairs[0].winner if pairs else ratings[0].image if ratings else None
        if judged is not None:
            self.image_size = tuple(np.shape(judged)[:2])
        terms = self._prepare(pairs, ratings, seed)
        if not terms:
            report.stopped = "no usable answers"
            return report
        if "distill" in terms:
            report.distill_ess = effective_sample_size(terms["distill"][2])
        params = trainable_parameters(self.unet)
        optimizer = torch.optim.AdamW(params, lr=c.learning_rate, weight_decay=0.0)
        gen = torch.Generator().manual_seed(seed)
        checked = self._mean_reward() if c.early_stopping else None
        best = None if checked is None else (checked[0], adapter_state(self.unet))
        report.reward_before = report.reward_after = None if checked is None else checked[0]
        good_state, worse_checks = adapter_state(self.unet), 0
        self.unet.train()
        for step in tqdm(range(1, c.steps + 1), desc="LoRA update", disable=not self.progress, leave=False):
            loss = self._loss(terms, gen)
            if not torch.isfinite(loss):
                load_adapter_state(self.unet, good_state)
                report.stopped = f"non-finite loss at step {step}; restored the last good adapter"
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            report.steps = step
            report.losses.append(float(loss.detach()))
            if self._on_step is not None:
                self._on_step(step, c.steps)
            if self._check is not None:
                self._check()
            if step % c.eval_every == 0 or step == c.steps:
                drift = self.drift.measure()
                if drift > c.drift_cap:
                    load_adapter_state(self.unet, good_state)  # its reward is already in report.reward_after
                    report.stopped = (
                        f"drift {drift:.3f} passed the cap {c.drift_cap}; restored the adapter from before it"
                    )
                    break
                good_state = adapter_state(self.unet)
                if best is not None:
                    reward, stderr = self._mean_reward()
                    report.reward_after = reward
                    if reward > best[0]:
                        best, worse_checks = (reward, good_state), 0
                    elif reward < best[0] - c.tolerance * stderr:
                        worse_checks += 1
                    if worse_checks >= c.patience or (step == c.steps and reward < best[0] - c.tolerance * stderr):
                        load_adapter_state(self.unet, best[1])
                        report.reward_after = best[0]
                        report.stopped = "reward of fresh samples stopped improving; kept the best adapter"
                        break
        self.unet.eval()
        report.drift = self.drift.measure()
        report.seconds = time.perf_counter() - start
        return report
