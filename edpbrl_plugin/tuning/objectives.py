"""The update methods, one :class:`Objective` each: which answers feed which loss term, and where the adapter acts.

* ``default``: learned-reward distillation (the reward model, fitted on every answer, scores a pool of base-model
  samples; training batches are drawn from it ∝ exp(r/τ), which fits the base model tilted by the reward) + PAPA
  on any like/dislike answers + Diffusion-DPO on the answered pairs at weight ``dpo_weight`` (0 by default).
  Distillation multiplies each human answer and trains only on clean base samples. DPO on a handful of pairs
  is what melted images (``edpbrl bench update``, docs/benchmarks.md: well formed 0.00 at weight 1), so the
  default leaves it out.
* ``dpo``: Diffusion-DPO on answered pairs only (winner vs each loser of a K-set; DPO-Positive with
  ``dpo_positive`` > 0).
* ``papa``: PAPA on like/dislike answers: ELBO-weighted signed denoising loss + base pull.
* ``epapa``: PAPA trained and used only at forward timesteps t >= ``epapa_min_timestep`` (the noisy part).
* ``distill``: reward distillation only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Objective:
    """One update method. ``pairs`` / ``ratings`` / ``distillation``: the loss terms it trains; ``gated``: the
    adapter acts only at noisy timesteps (EPAPA); ``needs``: what answers it cannot run without."""

    name: str
    pairs: bool = False
    ratings: bool = False
    distillation: bool = False
    gated: bool = False
    needs: str = ""

    @property
    def learns_from_answers(self) -> bool:
        return self.pairs or self.ratings

    def missing(self, n_pairs: int, n_ratings: int, has_reward: bool) -> str | None:
        """Why this update cannot run on these answers (None when it can)."""
        distilled = self.distillation and has_reward and (n_pairs or n_ratings)
        if self.learns_from_answers and not ((self.pairs and n_pairs) or (self.ratings and n_ratings) or distilled):
            return f"no usable answers ({self.needs} needed; skips carry none)"
        if self.distillation and not self.learns_from_answers and not has_reward:
            return "distillation needs a reward model"
        return None


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective("default", pairs=True, ratings=True, distillation=True, needs="answered pairs or ratings"),
        Objective("dpo", pairs=True, needs="answered pairs"),
        Objective("papa", ratings=True, needs="like/dislike answers"),
        Objective("epapa", ratings=True, gated=True, needs="like/dislike answers"),
        Objective("distill", distillation=True, needs="a reward model"),
    )
}
#: The update methods by name (``UpdateConfig.method``).
METHODS = tuple(OBJECTIVES)
