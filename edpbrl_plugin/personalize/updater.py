"""Online LoRA updates from answers: the default schedule and the PAPA / EPAPA / DPO / distillation variants.

Methods (``UpdateConfig.method``):

* ``"default"``: Diffusion-DPO on the answered pairs (winner vs each loser of a K-set) + PAPA on any
  like/dislike answers + learned-reward distillation (the reward model scores fresh samples of the
  current model; reward-weighted denoising). Distillation multiplies each human answer.
* ``"dpo"``: Diffusion-DPO on answered pairs only.
* ``"papa"``: PAPA on like/dislike answers: ELBO-weighted signed denoising loss + base pull.
* ``"epapa"``: PAPA trained and used only at forward timesteps t >= ``epapa_min_timestep``.
* ``"distill"``: reward distillation only.

Every update keeps the base model as the reference (adapter off), stops early when the reward of
fresh samples stops improving, restores the last good adapter on a NaN loss, and measures drift
from the base at each check, stopping (and restoring) when it passes ``drift_cap``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from .adapters import ADAPTER_NAME, TimestepGate, adapter_state, adapters_disabled, add_adapter, has_adapter, load_adapter_state, trainable_parameters
from .denoiser import Denoiser, concat_conditions, repeat_condition
from .drift import DriftMonitor
from .losses import dpo_loss, elbo_weights, papa_loss, per_sample_mse, rwr_loss

METHODS = ("default", "dpo", "papa", "epapa", "distill")


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
    method: str = "default"
    rank: int = 4
    alpha: float = 4.0
    targets: list[str] | None = None
    learning_rate: float = 1e-3
    steps: int = 30
    batch_size: int = 8
    dpo_beta: float = 2000.0
    distill_samples: int = 32
    distill_temperature: float = 0.5  # τ as a fraction of the rewards' standard deviation
    distill_weight: float = 1.0
    papa_c_pref: float = 0.1
    papa_c_base: float = 0.009
    unlikelihood_cap: float = 2.0
    epapa_min_timestep: int = 400
    eval_every: int = 10
    eval_samples: int = 16
    early_stopping: bool = True
    drift_cap: float = 0.25
    num_inference_steps: int = 20
    guidance_scale: float = 3.0
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.steps < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError("steps and batch_size must be >= 1 and learning_rate > 0")


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
        return f"{self.method}: {self.steps} steps on {self.n_pairs} pairs / {self.n_ratings} ratings{reward}, drift {self.drift:.4f}{stop}"


class LoraUpdater:
    """Runs updates of one pipeline's preference adapter.

    Args:
        pipe: a diffusers pipeline with a UNet (embedded, SD, SDXL).
        config: :class:`UpdateConfig`.
        reward_fn: images ``[B, H, W, 3]`` -> learned rewards ``[B]`` (needed for distillation and
            early stopping; without it those parts are skipped).
        prompts: the prompts fresh samples are drawn from.
        anchor_prompts: prompts for the drift check (default: ``prompts``).
    """

    def __init__(self, pipe, config: UpdateConfig | None = None, reward_fn: Callable | None = None,
                 prompts: Sequence[str] = ("",), anchor_prompts: Sequence[str] | None = None):
        self.pipe = pipe
        self.config = config or UpdateConfig()
        self.reward_fn = reward_fn
        self.prompts = list(prompts) or [""]
        self.denoiser = Denoiser(pipe)
        self.unet = pipe.unet
        self._ensure_adapter()
        self.drift = DriftMonitor(self.denoiser, self._sample_images, anchor_prompts or self.prompts)
        self._weights = elbo_weights(self.denoiser)
        self._round = 0
        self.progress = False

    def _ensure_adapter(self) -> None:
        if not has_adapter(self.unet, ADAPTER_NAME):
            add_adapter(self.unet, self.config.rank, self.config.alpha, self.config.targets, seed=self.config.seed)

    # ------------------------------------------------------------------ sampling
    @property
    def min_timestep(self) -> int:
        return self.config.epapa_min_timestep if self.config.method == "epapa" else 0

    def _sample_images(self, prompts: list[str], seed: int) -> np.ndarray:
        generator = torch.Generator().manual_seed(seed)
        was_training = self.unet.training
        self.unet.eval()
        try:
            out = self.pipe(prompt=prompts, generator=generator, num_inference_steps=self.config.num_inference_steps,
                            guidance_scale=self.config.guidance_scale, output_type="np")
        finally:
            self.unet.train(was_training)
        return np.asarray(out.images, dtype=np.float32)

    def sample(self, n: int, seed: int, prompts: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
        """``n`` images of the current (tuned) model and their prompts; EPAPA adapters are gated by timestep."""
        prompts = list(prompts or self.prompts)
        chosen = [prompts[i % len(prompts)] for i in range(n)]
        if self.min_timestep > 0:
            with TimestepGate(self.unet, self.min_timestep):
                return self._sample_images(chosen, seed), chosen
        return self._sample_images(chosen, seed), chosen

    def _mean_reward(self, seed: int) -> float | None:
        if self.reward_fn is None:
            return None
        images, _ = self.sample(self.config.eval_samples, seed)
        return float(np.mean(self.reward_fn(images)))

    # ------------------------------------------------------------------ losses
    def _errors(self, x0, condition, noise, t, epsilon_space: bool = False) -> torch.Tensor:
        x_t = self.denoiser.add_noise(x0, noise, t)
        prediction = self.denoiser.predict(x_t, t, condition)
        if epsilon_space:
            return per_sample_mse(self.denoiser.to_epsilon(prediction, x_t, t), noise)
        return per_sample_mse(prediction, self.denoiser.target(x0, noise, t))

    def _dpo_term(self, data, gen) -> torch.Tensor:
        x_w, x_l, cond_w, cond_l = data
        idx = torch.randint(0, len(x_w), (min(self.config.batch_size, len(x_w)),), generator=gen)
        b = len(idx)
        noise = torch.randn(x_w[idx].shape, generator=gen).to(x_w)
        t = self.denoiser.sample_timesteps(b, gen, self.min_timestep)
        x0 = torch.cat([x_w[idx], x_l[idx]])
        condition = concat_conditions(repeat_condition(cond_w, idx), repeat_condition(cond_l, idx))
        noise2, t2 = torch.cat([noise, noise]), torch.cat([t, t])
        model = self._errors(x0, condition, noise2, t2)
        with torch.no_grad(), adapters_disabled(self.unet):
            ref = self._errors(x0, condition, noise2, t2)
        loss, _ = dpo_loss(model[:b], model[b:], ref[:b], ref[b:], self.config.dpo_beta)
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
        return papa_loss(error, base_error, pull, labels, self._weights.to(t.device)[t], c.papa_c_pref, c.papa_c_base,
                         c.unlikelihood_cap)

    def _distill_term(self, data, gen) -> torch.Tensor:
        x0_all, cond_all, rewards_all, temperature = data
        idx = torch.randint(0, len(x0_all), (min(self.config.batch_size, len(x0_all)),), generator=gen)
        noise = torch.randn(x0_all[idx].shape, generator=gen).to(x0_all)
        t = self.denoiser.sample_timesteps(len(idx), gen, self.min_timestep)
        error = self._errors(x0_all[idx], repeat_condition(cond_all, idx), noise, t)
        return self.config.distill_weight * rwr_loss(error, rewards_all[idx], temperature)

    # ------------------------------------------------------------------ the update
    def _prepare(self, pairs: Sequence[PreferencePair], ratings: Sequence[Rating], seed: int) -> dict:
        method, terms = self.config.method, {}
        if pairs and method in ("default", "dpo"):
            terms["dpo"] = (
                self.denoiser.encode_images(np.stack([p.winner for p in pairs])),
                self.denoiser.encode_images(np.stack([p.loser for p in pairs])),
                self.denoiser.condition([p.winner_prompt for p in pairs]),
                self.denoiser.condition([p.loser_prompt for p in pairs]),
            )
        if ratings and method in ("default", "papa", "epapa"):
            terms["papa"] = (
                self.denoiser.encode_images(np.stack([r.image for r in ratings])),
                self.denoiser.condition([r.prompt for r in ratings]),
                torch.tensor([1.0 if r.label > 0 else -1.0 for r in ratings], device=self.denoiser.device),
            )
        if self.reward_fn is not None and method in ("default", "distill") and (terms or method == "distill"):
            images, prompts = self.sample(self.config.distill_samples, seed)
            rewards = torch.as_tensor(np.asarray(self.reward_fn(images), dtype=np.float32), device=self.denoiser.device)
            spread = float(rewards.std()) if len(rewards) > 1 else 0.0
            if spread > 1e-6:
                terms["distill"] = (self.denoiser.encode_images(images), self.denoiser.condition(prompts), rewards,
                                    self.config.distill_temperature * spread)
        return terms

    def update(self, pairs: Sequence[PreferencePair] = (), ratings: Sequence[Rating] = (),
               on_step: Callable[[int, int], None] | None = None) -> UpdateReport:
        """One update of the adapter from these answers (typically all answers so far).

        ``on_step(step, total)`` is called after every optimiser step (a host's progress bar).
        """
        start = time.perf_counter()
        c = self.config
        self._round += 1
        seed = c.seed * 7919 + self._round
        report = UpdateReport(c.method, n_pairs=len(pairs), n_ratings=len(ratings))
        needs = {"dpo": "answered pairs", "papa": "like/dislike answers", "epapa": "like/dislike answers"}
        if (c.method == "dpo" and not pairs) or (c.method in ("papa", "epapa") and not ratings) or (
            c.method == "default" and not pairs and not ratings
        ):
            report.stopped = f"no usable answers ({needs.get(c.method, 'pairs or ratings')} needed; skips carry none)"
            return report
        if c.method == "distill" and self.reward_fn is None:
            report.stopped = "distillation needs a reward model"
            return report
        self._ensure_adapter()
        self.unet.set_adapter(ADAPTER_NAME)
        terms = self._prepare(pairs, ratings, seed)
        if not terms:
            report.stopped = "no usable answers"
            return report
        params = trainable_parameters(self.unet)
        optimizer = torch.optim.AdamW(params, lr=c.learning_rate, weight_decay=0.0)
        gen = torch.Generator().manual_seed(seed)
        best_state, best_reward = adapter_state(self.unet), self._mean_reward(seed + 1) if c.early_stopping else None
        report.reward_before = best_reward
        good_state = best_state
        self.unet.train()
        for step in tqdm(range(1, c.steps + 1), desc="LoRA update", disable=not self.progress, leave=False):
            loss = 0.0
            if "dpo" in terms:
                loss = loss + self._dpo_term(terms["dpo"], gen)
            if "papa" in terms:
                loss = loss + self._papa_term(terms["papa"], gen)
            if "distill" in terms:
                loss = loss + self._distill_term(terms["distill"], gen)
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
            if on_step is not None:
                on_step(step, c.steps)
            if step % c.eval_every == 0 or step == c.steps:
                drift = self.drift.measure()
                if drift > c.drift_cap:
                    load_adapter_state(self.unet, good_state)
                    report.stopped = f"drift {drift:.3f} passed the cap {c.drift_cap}; restored the adapter from before it"
                    break
                good_state = adapter_state(self.unet)
                if c.early_stopping and best_reward is not None:
                    reward = self._mean_reward(seed + 1)
                    if reward < best_reward:
                        load_adapter_state(self.unet, best_state)
                        report.stopped = "reward of fresh samples stopped improving; kept the best adapter"
                        break
                    best_reward, best_state = reward, good_state
        self.unet.eval()
        report.reward_after = best_reward if c.early_stopping else None
        report.drift = self.drift.measure()
        report.seconds = time.perf_counter() - start
        return report
