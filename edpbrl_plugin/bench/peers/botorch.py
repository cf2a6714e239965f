"""BoTorch's PairwiseGP with analytic EUBO (``pip install 'edpbrl[bench]'``): the peer of ``bench queries`` and
``bench select``. BoTorch is imported inside the functions so the benchmarks run without it."""

from __future__ import annotations

import time

import numpy as np

#: Kernel hyper-parameters are refitted every this many answers (the posterior uses every answer).
REFIT_EVERY = 5


class BotorchPeer:
    """BoTorch PairwiseGP + analytic EUBO on the same pool (pairs only)."""

    def __init__(self):
        import torch  # noqa: F401  (imported here: only the peer needs botorch)
        from botorch.acquisition.preference import AnalyticExpectedUtilityOfBestOption
        from botorch.fit import fit_gpytorch_mll
        from botorch.models.pairwise_gp import PairwiseGP, PairwiseLaplaceMarginalLogLikelihood

        self._classes = (PairwiseGP, PairwiseLaplaceMarginalLogLikelihood, fit_gpytorch_mll)
        self._eubo = AnalyticExpectedUtilityOfBestOption
        self.model = None

    def fit(self, points: np.ndarray | None, comparisons: list[tuple[int, int]]) -> None:
        """Laplace posterior on all comparisons; kernel hyper-parameters refitted every ``REFIT_EVERY`` answers.

        (BoTorch's marginal-likelihood fit takes ~2 s per call on this CPU; refitting after every
        answer would make the peer the whole benchmark. The posterior itself uses every answer.)
        """
        import copy

        import torch

        gp_cls, mll_cls, fit = self._classes
        if not comparisons:
            self.model = gp_cls(None, None)
            return
        kernel = (
            copy.deepcopy(self.model.covar_module)
            if self.model is not None and self.model.datapoints is not None
            else None
        )
        self.model = gp_cls(
            torch.as_tensor(points), torch.as_tensor(comparisons, dtype=torch.long), covar_module=kernel
        )
        if kernel is None or len(comparisons) % REFIT_EVERY == 0:
            try:
                fit(mll_cls(self.model.likelihood, self.model), optimizer_kwargs={"options": {"maxiter": 50}})
            except Exception:  # the peer's fit can fail on few comparisons; keep its current hyper-parameters
                pass

    def select(self, pool: np.ndarray) -> tuple[int, int]:
        """The pool pair with the largest analytic EUBO.

        EUBO needs each pair's posterior mean and 2×2 covariance, so it is computed for all N² pairs
        from one joint posterior over the pool (BoTorch's own formula; ``bench select`` checks it
        against ``AnalyticExpectedUtilityOfBestOption`` on the same pairs).
        """
        import torch

        i, j = np.triu_indices(len(pool), 1)
        if self.model.datapoints is None:  # prior: every pair scores alike; take a random one
            pick = np.random.default_rng(len(pool)).integers(len(i))
            return int(i[pick]), int(j[pick])
        with torch.no_grad():
            posterior = self.model.posterior(torch.as_tensor(pool))
            mean = posterior.mean.squeeze(-1).numpy()
            cov = posterior.covariance_matrix.numpy()
        scores = eubo_from_joint(mean, cov, i, j)
        pick = int(scores.argmax())
        return int(i[pick]), int(j[pick])

    def utilities(self, points: np.ndarray) -> np.ndarray:
        import torch

        if self.model.datapoints is None:
            return np.zeros(len(points))
        with torch.no_grad():
            return self.model.posterior(torch.as_tensor(points)).mean.squeeze(-1).numpy()


def eubo_from_joint(mean: np.ndarray, cov: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Analytic EUBO of pairs (i, j) from a joint Gaussian posterior: E[max(f_i, f_j)]."""
    from scipy.stats import norm

    delta = mean[i] - mean[j]
    sigma = np.sqrt(np.clip(cov[i, i] + cov[j, j] - 2 * cov[i, j], 1e-6**2, None))
    u = delta / sigma
    return sigma * (norm.pdf(u) + u * norm.cdf(u)) + mean[j]


def eubo_seconds(features, answers, pairs, chunk: int = 4096) -> tuple[float, float]:
    """Seconds of BoTorch's EUBO over ``pairs``, and max |EUBO − our joint-posterior EUBO| on them."""
    import torch
    from botorch.acquisition.preference import AnalyticExpectedUtilityOfBestOption
    from botorch.fit import fit_gpytorch_mll
    from botorch.models.pairwise_gp import PairwiseGP, PairwiseLaplaceMarginalLogLikelihood

    seen = sorted({i for a in answers for i in a.query})
    row = {c: r for r, c in enumerate(seen)}
    comparisons = [(row[a.query[a.outcome]], row[a.query[1 - a.outcome]]) for a in answers]
    model = PairwiseGP(torch.as_tensor(features[seen]), torch.as_tensor(comparisons))
    fit_gpytorch_mll(
        PairwiseLaplaceMarginalLogLikelihood(model.likelihood, model), optimizer_kwargs={"options": {"maxiter": 50}}
    )
    acq = AnalyticExpectedUtilityOfBestOption(pref_model=model)
    x = torch.as_tensor(np.stack([features[pairs[:, 0]], features[pairs[:, 1]]], axis=1))
    with torch.no_grad():
        acq(x[:2])  # build the model's posterior caches outside the timed call
    start = time.perf_counter()
    with torch.no_grad():
        values = torch.cat([acq(c) for c in x.split(chunk)]).numpy()
        int(values.argmax())
    seconds = time.perf_counter() - start
    with torch.no_grad():
        post = model.posterior(torch.as_tensor(features))
        ours = eubo_from_joint(post.mean.squeeze(-1).numpy(), post.covariance_matrix.numpy(), pairs[:, 0], pairs[:, 1])
    return seconds, float(np.max(np.abs(ours - values)))
