"""Simulated users: B-Pref teachers and attribute rules."""

import numpy as np
import pytest

from edpbrl_plugin.simulate.teachers import LinearUser, Teacher, attribute_theta

ATTRS = {"shape": ("circle", "star"), "hue": ("red", "blue"), "background": ("white", "black")}


def test_oracle_always_picks_the_best_option():
    user = LinearUser([1.0, 0.0], Teacher(beta=float("inf")), seed=0)
    options = np.array([[0.1, 5.0], [0.9, 0.0], [0.5, 0.0]])
    assert {user.answer(options) for _ in range(50)} == {1}


def test_noisy_teacher_follows_the_logit_choice_probability():
    user = LinearUser([1.0], Teacher(beta=2.0), seed=0)
    answers = [user.answer(np.array([[0.5], [0.0]])) for _ in range(20000)]
    assert np.mean(np.array(answers) == 0) == pytest.approx(1 / (1 + np.exp(-1.0)), abs=0.01)


def test_mistake_skip_equal_and_myopic_teachers():
    rng = np.random.default_rng(0)
    flip = Teacher(beta=float("inf"), mistake=0.3)
    picks = [flip.choose(np.array([1.0, 0.0]), rng) for _ in range(10000)]
    assert np.mean(np.array(picks) == 1) == pytest.approx(0.3, abs=0.02)
    assert Teacher(skip_below=0.0).choose(np.array([-1.0, -2.0]), rng) == "skip"
    assert Teacher(equal=0.5).choose(np.array([1.0, 1.2]), rng) == "tie"
    myopic = LinearUser([1.0], Teacher(myopic=0.5))
    # Two slots: the last slot weighs 1, the first 0.5.
    np.testing.assert_allclose(myopic.utility(np.array([[[1.0], [0.0]], [[0.0], [1.0]]])), [0.5, 1.0])


def test_like_dislike_rating():
    user = LinearUser([1.0], Teacher(beta=float("inf")), like_threshold=0.5)
    assert user.rate(np.array([1.0])) == "like" and user.rate(np.array([0.0])) == "dislike"


def test_attribute_rules_build_a_sparse_theta():
    theta = attribute_theta(ATTRS, likes={"star": 1.0, "blue": 2.0}, dislikes={"black": 1.5})
    np.testing.assert_allclose(theta, [0, 1, 0, 2, 0, -1.5])
    with pytest.raises(ValueError, match="known values"):
        attribute_theta(ATTRS, likes={"green": 1.0})


def test_bad_teacher_settings_raise():
    with pytest.raises(ValueError, match="beta"):
        Teacher(beta=0)
    with pytest.raises(ValueError, match="mistake"):
        Teacher(mistake=2)
    with pytest.raises(ValueError, match="theta_star"):
        LinearUser([np.nan])
