"""Choice models: likelihoods, Fisher information and the regularised MLE."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import log_expit, log_softmax

from edpbrl_plugin.learning.answers import Answer
from edpbrl_plugin.learning.choice import ChoiceModel, pair_fisher_weight
from edpbrl_plugin.querying.fisher import mnl_fisher, mnl_weight


def numeric_hessian(f, theta, eps=1e-4):
    d = len(theta)
    hess = np.zeros((d, d))
    for i in range(d):
        for j in range(d):
            e_i, e_j = np.eye(d)[i] * eps, np.eye(d)[j] * eps
            hess[i, j] = (f(theta + e_i + e_j) - f(theta + e_i - e_j) - f(theta - e_i + e_j) + f(theta - e_i - e_j)) / (
                4 * eps**2
            )
    return hess


@pytest.mark.parametrize("k", [2, 3, 5])
def test_mnl_fisher_equals_hessian_of_negative_log_likelihood_for_every_outcome(rng, k):
    features = rng.normal(size=(k, 4))
    theta = rng.normal(size=4)
    fisher = mnl_fisher(features, theta)
    for chosen in range(k):
        nll = lambda t, c=chosen: -log_softmax(features @ t)[c]  # noqa: E731
        np.testing.assert_allclose(numeric_hessian(nll, theta), fisher, atol=1e-5)


def test_like_dislike_fisher_equals_hessian(rng):
    x = np.append(rng.normal(size=3), 1.0)  # features plus the bias column
    w = rng.normal(size=4)
    p = 1 / (1 + np.exp(-(x @ w)))
    fisher = p * (1 - p) * np.outer(x, x)
    for sign in (1, -1):
        hess = numeric_hessian(lambda t: -log_expit(sign * (x @ t)), w)
        np.testing.assert_allclose(hess, fisher, atol=1e-5)


def test_tie_model_fisher_equals_hessian_averaged_over_outcomes_not_each_outcome(rng):
    delta_margin = 0.7
    z = rng.normal(size=3)
    theta = rng.normal(size=3) * 0.5
    logs = {
        "a": lambda t: log_expit(z @ t - delta_margin),
        "b": lambda t: log_expit(-(z @ t) - delta_margin),
        "tie": lambda t: (
            log_expit(z @ t + delta_margin) + log_expit(delta_margin - z @ t) + np.log1p(-np.exp(-2 * delta_margin))
        ),
    }
    probs = {name: np.exp(f(theta)) for name, f in logs.items()}
    assert sum(probs.values()) == pytest.approx(1.0)
    hessians = {name: numeric_hessian(lambda t, f=f: -f(t), theta) for name, f in logs.items()}
    averaged = sum(probs[name] * hessians[name] for name in logs)
    fisher = pair_fisher_weight(z @ theta, delta_margin) * np.outer(z, z)
    np.testing.assert_allclose(averaged, fisher, atol=1e-5)
    assert not np.allclose(hessians["tie"], fisher, atol=1e-3)


def test_bradley_terry_weight_is_p_one_minus_p():
    delta = np.linspace(-4, 4, 9)
    p = 1 / (1 + np.exp(-delta))
    np.testing.assert_allclose(pair_fisher_weight(delta, 0.0), p * (1 - p))


def test_mle_recovers_theta_star_on_easy_synthetic_data(rng):
    features = rng.normal(size=(400, 5))
    theta_star = np.array([2.0, -1.0, 0.5, 0.0, 1.0])
    answers = []
    for _ in range(3000):
        i, j = rng.choice(400, 2, replace=False)
        p = 1 / (1 + np.exp(-(features[i] - features[j]) @ theta_star))
        answers.append(Answer((i, j), 0 if rng.random() < p else 1))
    model = ChoiceModel(reg=1e-3, tie_margin=0.0).fit(features, answers)
    np.testing.assert_allclose(model.theta_, theta_star, atol=0.15)
    # The posterior covers the truth: standardised errors are O(1).
    z = (model.theta_ - theta_star) / np.sqrt(np.diag(model.covariance_))
    assert np.all(np.abs(z) < 4)


def test_mle_recovers_kway_and_like_dislike_parameters(rng):
    features = rng.normal(size=(300, 4))
    theta_star = np.array([1.5, -1.0, 0.0, 0.5])
    answers = []
    for _ in range(2000):
        q = rng.choice(300, 4, replace=False)
        p = np.exp(features[q] @ theta_star)
        answers.append(Answer(tuple(q), int(rng.choice(4, p=p / p.sum()))))
    for i in rng.integers(0, 300, 2000):
        liked = rng.random() < 1 / (1 + np.exp(-(features[i] @ theta_star - 0.5)))
        answers.append(Answer((int(i),), "like" if liked else "dislike"))
    model = ChoiceModel(reg=1e-3).fit(features, answers)
    np.testing.assert_allclose(model.theta_, theta_star, atol=0.2)
    assert model.bias_ == pytest.approx(-0.5, abs=0.25)


def test_separable_data_stays_finite_and_regularised(rng):
    features = rng.normal(size=(10, 3))
    model = ChoiceModel(reg=1.0).fit(features, [Answer((0, 1), 0)] * 200)
    assert np.isfinite(model.theta_).all() and np.isfinite(model.covariance_).all()
    assert model.reward(features)[0] > model.reward(features)[1]


def test_partial_fit_matches_fit_from_scratch(rng):
    features = rng.normal(size=(50, 4))
    answers = [Answer(tuple(rng.choice(50, 2, replace=False)), int(rng.integers(2))) for _ in range(30)]
    answers += [Answer((3, 4), "tie"), Answer((5,), "like"), Answer((6, 7), "skip")]
    full = ChoiceModel().fit(features, answers)
    incremental = ChoiceModel().fit(features, answers[:10]).partial_fit(features, answers[10:])
    np.testing.assert_allclose(incremental.theta_, full.theta_, atol=1e-7)
    np.testing.assert_allclose(incremental.precision_, full.precision_, atol=1e-7)
    assert incremental.n_answers_ == 33 and incremental.n_informative_ == 32


def test_precision_is_reg_plus_fisher_sum_at_theta_hat(rng):
    features = rng.normal(size=(20, 3))
    answers = [Answer((0, 1), 0), Answer((2, 3, 4), 2), Answer((5, 6), 1)]
    model = ChoiceModel(reg=2.0, tie_margin=0.0).fit(features, answers)
    expected = 2.0 * np.eye(3)
    expected += mnl_fisher(features[[0, 1]], model.theta_) + mnl_fisher(features[[2, 3, 4]], model.theta_)
    expected += mnl_fisher(features[[5, 6]], model.theta_)
    np.testing.assert_allclose(model.precision_, expected, atol=1e-9)
    np.testing.assert_allclose(model.covariance_ @ model.precision_, np.eye(3), atol=1e-9)


def test_ties_pull_rewards_together(rng):
    features = np.array([[1.0, 0.0], [0.0, 1.0]])
    strict = ChoiceModel().fit(features, [Answer((0, 1), 0)] * 5)
    tied = ChoiceModel().fit(features, [Answer((0, 1), 0)] * 5 + [Answer((0, 1), "tie")] * 10)
    gap = lambda m: m.reward(features)[0] - m.reward(features)[1]  # noqa: E731
    assert 0 < gap(tied) < gap(strict)


def test_posterior_samples_have_the_laplace_covariance(rng):
    features = rng.normal(size=(30, 3))
    model = ChoiceModel().fit(features, [Answer((i, i + 1), 0) for i in range(0, 20, 2)])
    samples = model.sample_theta(20000, rng=0)
    np.testing.assert_allclose(np.cov(samples.T), model.covariance_, atol=0.03)
    assert model.predict_proba(features, [[0, 1], [2, 3]]).sum(axis=1) == pytest.approx([1.0, 1.0])


@pytest.mark.parametrize(
    "features, answers, match",
    [
        (np.array([[np.nan, 1.0], [0.0, 1.0]]), [], "NaN"),
        (np.array([[np.inf, 1.0], [0.0, 1.0]]), [], "NaN or inf"),
        (np.zeros(5), [], "2-D"),
        (np.zeros((3, 2)), [Answer((0, 7), 0)], "references candidate 7"),
    ],
)
def test_bad_inputs_raise_value_errors_naming_the_problem(features, answers, match):
    with pytest.raises(ValueError, match=match):
        ChoiceModel().fit(features, answers)


def test_bad_answers_and_hyperparameters_raise():
    with pytest.raises(ValueError, match="reg"):
        ChoiceModel(reg=0.0).fit(np.zeros((2, 2)), [])
    with pytest.raises(ValueError, match="reg"):
        ChoiceModel(reg=-1.0).fit(np.zeros((2, 2)), [])
    with pytest.raises(ValueError, match="tie"):
        Answer((0, 1, 2), "tie")
    with pytest.raises(ValueError, match="twice"):
        Answer((1, 1), 0)
    with pytest.raises(ValueError, match="not a position"):
        Answer((0, 1), 2)
    with pytest.raises(ValueError, match="unknown outcome"):
        Answer((0, 1), "maybe")
    with pytest.raises(ValueError, match="tie_margin > 0"):
        ChoiceModel(tie_margin=0.0).fit(np.eye(2), [Answer((0, 1), "tie")])
    with pytest.raises(ValueError, match="dimensions"):
        ChoiceModel().fit(np.eye(3), []).partial_fit(np.eye(2), [])


# ---------------------------------------------------------------------- lapse (a person who sometimes slips)
def _lapsed_pair_probabilities(delta, margin, lapse):
    low, high = 1 / (1 + np.exp(-(delta - margin))), 1 / (1 + np.exp(-(delta + margin)))
    return np.array([(1 - lapse) * low + lapse / 2, (1 - lapse) * (1 - high) + lapse / 2, (1 - lapse) * (high - low)])


@settings(max_examples=60, deadline=None)
@given(
    delta=st.floats(-8, 8),
    margin=st.sampled_from([0.0, 0.25, 1.0]),
    lapse=st.floats(0.0, 0.5),
)
def test_lapsed_pair_fisher_is_the_information_of_its_three_outcomes(delta, margin, lapse):
    h = 1e-5
    p = _lapsed_pair_probabilities(delta, margin, lapse)
    dp = _lapsed_pair_probabilities(delta + h, margin, lapse) - _lapsed_pair_probabilities(delta - h, margin, lapse)
    dp /= 2 * h
    keep = p > 1e-12
    expected = (dp[keep] ** 2 / p[keep]).sum()
    assert p.sum() == pytest.approx(1.0)
    assert pair_fisher_weight(delta, margin, lapse) == pytest.approx(expected, rel=1e-4, abs=1e-9)
    # a slip can only hide information
    assert 0 <= pair_fisher_weight(delta, margin, lapse) <= pair_fisher_weight(delta, margin, 0.0) + 1e-12


@pytest.mark.parametrize("k", [3, 4])
def test_lapsed_set_weight_is_psd_and_is_the_mnl_weight_without_a_lapse(rng, k):
    p = rng.dirichlet(np.ones(k), size=5)
    np.testing.assert_allclose(ChoiceModel(lapse=0.0).set_weight(p), mnl_weight(p), atol=1e-12)
    weight = ChoiceModel(lapse=0.2).set_weight(p)
    assert np.all(np.linalg.eigvalsh(weight) > -1e-12)
    assert np.all(np.linalg.eigvalsh(mnl_weight(p) - weight) > -1e-12)


def test_lapsed_gradient_matches_the_likelihood(rng):
    """The fit's gradient is that of its own negative log posterior, for every answer type at once."""
    features = rng.normal(size=(12, 3))
    answers = [Answer((0, 1), 0), Answer((2, 3), 1), Answer((4, 5), "tie"), Answer((6, 7, 8), 2)]
    answers += [Answer((9,), "like"), Answer((10,), "dislike")]
    model = ChoiceModel(lapse=0.15).fit(features, answers)
    w = rng.normal(size=4)
    value, grad, _ = model._terms(w, hessian=True)
    numeric = [(model._terms(w + e, False)[0] - model._terms(w - e, False)[0]) / 2e-6 for e in np.eye(4) * 1e-6]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7)
    probabilities = model.predict_proba(features, [[0, 1], [6, 7]])
    assert probabilities.sum(axis=1) == pytest.approx([1.0, 1.0]) and probabilities.min() >= 0.15 / 2


def test_a_lapse_keeps_a_few_flipped_answers_from_steering_the_estimate(rng):
    """40 consistent answers, then 8 flipped ones between the most different candidates: with a lapse the
    estimate keeps more of its direction than without."""
    features = rng.normal(size=(60, 4))
    theta_star = np.array([1.5, -1.0, 0.5, 0.0])
    answers = []
    for _ in range(40):
        i, j = rng.choice(60, 2, replace=False)
        answers.append(Answer((int(i), int(j)), 0 if (features[i] - features[j]) @ theta_star > 0 else 1))
    utility = features @ theta_star
    best, worst = np.argsort(utility)[-4:], np.argsort(utility)[:4]
    answers += [Answer((int(b), int(w)), 1) for b, w in zip(best, worst)] * 2  # the worst "wins", 8 times

    def cosine(model):
        return model.theta_ @ theta_star / np.linalg.norm(model.theta_) / np.linalg.norm(theta_star)

    plain, lapsed = ChoiceModel(tie_margin=0.0).fit(features, answers), ChoiceModel(reg=1.0, tie_margin=0.0, lapse=0.2)
    lapsed.fit(features, answers)
    assert cosine(lapsed) > cosine(plain)
    assert np.all(np.linalg.eigvalsh(lapsed.precision_) > 0)


def test_lapse_must_be_a_probability_below_one():
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="lapse"):
            ChoiceModel(lapse=bad).fit(np.eye(2), [])
