"""The BoTorch peer of ``bench queries`` (skipped without ``pip install 'edpbrl[bench]'``)."""

import numpy as np
import pytest

pytest.importorskip("botorch")

import torch  # noqa: E402  (after the skip: only the peer needs botorch)

from edpbrl_plugin.bench import queries  # noqa: E402
from edpbrl_plugin.bench.peers.botorch import UTILITY_CHUNK, BotorchPeer  # noqa: E402


def test_chunked_utilities_are_botorchs_posterior_mean_over_all_points_at_once():
    rng = np.random.default_rng(0)
    peer = BotorchPeer(seed=0)
    peer.fit(rng.normal(size=(12, 5)), [(2 * k, 2 * k + 1) for k in range(6)])
    points = rng.normal(size=(UTILITY_CHUNK + 45, 5))
    points[-10:] = points[:10]  # repeated points, as setting B's one-hot options have, need jitter in the covariance
    with torch.no_grad():
        whole = peer.model.posterior(torch.as_tensor(points)).mean.squeeze(-1).numpy()
    np.testing.assert_allclose(peer.utilities(points), whole, rtol=0, atol=1e-12)


def test_a_short_peer_curve_records_the_accuracy_after_every_answer():
    curve = queries.run_curve("A", queries.PEER, seed=0, n_answers=6)
    assert len(curve["accuracy"]) == 7 and all(0.0 <= a <= 1.0 for a in curve["accuracy"])
