"""BoTorch's PairwiseGP with analytic EUBO (``pip install 'edpbrl[bench]'``): the peer of ``bench queries`` and
``bench select``. BoTorch is imported inside the functions so the benchmarks run without it."""

from __future__ import annotations

import time

import numpy as np

#: Kernel hyper-parameters are refitted every this many answers (the posterior uses every answer).
REFIT_EVERY = 5

#: Points per posterior call in ``utilities``. BoTorch's ``PairwiseGP.posterior`` always builds the joint
#: covariance of its inputs and Cholesky-factors it (twice), although ``utilities`` reads only the mean: on the 4000
#: options of ``bench queries``' test set that is ~3 s per answer, the whole curve. Each point's mean depends on that
#: point alone, so chunks give the same means at O(n · chunk²) instead of O(n³).
UTILITY_CHUNK = 256


class BotorchPeer:
    """BoTorch PairwiseGP + analytic EUBO on the same pool (pairs only)."""

    def __init__(self, seed: int = 0) -> None:
        """Seeds torch's global generator with ``seed``: when a hyper-parameter fit stops abnormally, BoTorch
        restarts it from values drawn from the kernel's priors with that generator, which would otherwise make a
        curve depend on the jobs a worker process ran before it."""
        import torch  # imported here: only the peer needs botorch
        from botorch.fit import fit_gpytorch_mll
        from botorch.models.pairwise_gp import PairwiseGP, PairwiseLaplaceMarginalLogLikelihood

        self._classes = (PairwiseGP, PairwiseLaplaceMarginalLogLikelihood, fit_gpytorch_mll)
        self.model = None
        torch.manual_seed(seed)

    def fit(self, points: np.ndarray | None, comparisons: list[tuple[int, int]]) -> None:
        """Laplace posterior on all comparisons; kernel hyper-parameters refitted every ``REFIT_EVERY`` answers.

        (BoTorch's marginal-likelihood fit takes ~0.25 s per call on one CPU thread over a 60-answer curve of
        setting A; refitting after every answer would about triple the peer's ~8 s curve. The posterior itself
        uses every answer.)
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
        """Posterior mean utility ``[n]`` of each of ``points`` ``[n, d]`` (zero under the prior), in chunks of
        ``UTILITY_CHUNK`` points so no ``[n, n]`` covariance is built.

        A chunk's covariance (which is not used) needs jitter when the chunk repeats a point, as setting B's
        one-hot options often do; the warning BoTorch prints for that each time is silenced here.
        """
        import warnings

        import torch
        from linear_operator.utils.warnings import NumericalWarning

        if self.model.datapoints is None:
            return np.zeros(len(points))
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", NumericalWarning)
            means = [self.model.posterior(chunk).mean for chunk in torch.as_tensor(points).split(UTILITY_CHUNK)]
        return torch.cat(means).squeeze(-1).numpy()


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
