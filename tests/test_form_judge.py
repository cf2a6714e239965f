"""The well-formedness judge sees what the attribute encoder cannot: broken images (evaluation only)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edpbrl_plugin.learning.answers import BOTH_BAD, DISLIKE, SKIP
from edpbrl_plugin.models.shapes.damage import DAMAGES, damaged_renders
from edpbrl_plugin.models.shapes.form import FormJudge
from edpbrl_plugin.models.shapes.judge import WELL_FORMED, AttributeTaste
from edpbrl_plugin.models.shapes.shapes import render_batch
from edpbrl_plugin.simulate.evaluation import compare, frechet_distance, total_variation
from edpbrl_plugin.simulate.teachers import Teacher


@pytest.fixture(scope="module")
def judge():
    return FormJudge()


def test_clean_renders_pass_and_the_fit_finds_their_shape_and_fill(judge):
    images, labels = render_batch(24, seed=11)
    report = judge(images)
    assert report.well_formed.all()
    assert (report.shape == labels["shape"]).mean() >= 0.95 and (report.fill == labels["fill"]).all()
    assert report.fit.shape == (24, 32, 32) and np.all((report.score > 0) & (report.score <= 1))


@pytest.mark.parametrize("kind", DAMAGES)
def test_the_score_falls_with_every_step_of_damage_and_the_worst_mostly_fail(judge, kind):
    scores, passed = [], []
    for severity in (0.0, 0.5, 1.0):
        report = judge(damaged_renders(16, seed=5, kind=kind, severity=severity))
        scores.append(report.score.mean())
        passed.append(report.well_formed.mean())
    assert scores[0] > scores[1] > scores[2]
    assert passed[0] == 1.0 and passed[2] <= 0.6


def test_bad_images_and_damage_settings_are_refused(judge):
    with pytest.raises(ValueError, match=r"images must be \[B, 32, 32, 3\]"):
        judge(np.zeros((2, 16, 16, 3)))
    with pytest.raises(ValueError, match="unknown damage"):
        damaged_renders(2, 0, "rust", 0.5)
    with pytest.raises(ValueError, match="severity must be in"):
        damaged_renders(2, 0, "blur", 1.5)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.one_of(st.just(-np.inf), st.floats(-5, 5)), min_size=2, max_size=5),
    st.integers(0, 2**31 - 1),
    st.sampled_from([Teacher(beta=0.5), Teacher(beta=2.0, mistake=0.5), Teacher(beta=float("inf"), mistake=1.0)]),
)
def test_no_teacher_ever_prefers_a_broken_option(utilities, seed, teacher):
    u = np.array(utilities)
    answer = teacher.choose(u, np.random.default_rng(seed))
    if np.isinf(u).all():
        assert answer == BOTH_BAD
    else:
        assert isinstance(answer, int) and u[answer] > -np.inf
    assert teacher.rate(-np.inf, 0.0, np.random.default_rng(seed)) == DISLIKE


def test_a_hurried_teacher_skips_about_the_asked_share_of_questions():
    rng = np.random.default_rng(0)
    answers = [Teacher(beta=2.0, skip_rate=0.2).choose(np.array([1.0, 0.0]), rng) for _ in range(2000)]
    assert abs(np.mean([a == SKIP for a in answers]) - 0.2) < 0.03
    with pytest.raises(ValueError, match="skip_rate"):
        Teacher(skip_rate=1.0)


def test_a_broken_image_is_never_preferred_and_counts_against_the_share():
    taste = AttributeTaste(likes=("blue",))
    labels = {"hue": np.array([5, 5, 0]), WELL_FORMED: np.array([True, False, True])}
    assert taste.preferred(labels).tolist() == [True, False, False]
    assert taste.utility(labels).tolist() == [2.0, -np.inf, 0.0]


def test_win_rate_counts_ties_half_and_broken_tuned_samples_as_losses():
    taste = AttributeTaste(likes=("blue",))
    base = {"hue": np.array([0, 5, 0, 5]), WELL_FORMED: np.ones(4, bool)}
    tuned = {"hue": np.array([5, 5, 0, 5]), WELL_FORMED: np.array([True, True, True, False])}
    images = np.zeros((4, 32, 32, 3))
    result = compare(taste, (images, tuned), (images, base))
    assert result["win_rate"] == pytest.approx((1 + 0.5 + 0.5 + 0) / 4)
    assert result["share"] == 0.5 and result["well_formed"] == 0.75


def test_frechet_distance_and_total_variation_are_distances():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 4)), rng.normal(loc=2.0, size=(400, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, b) == pytest.approx(16.0, rel=0.15)  # |Δμ|² = 4·2²
    assert total_variation(np.array([0, 0, 1, -1]), np.array([1, 1]), 2) == pytest.approx(2 / 3)
    assert total_variation(np.array([0, 1]), np.array([1, 0]), 3) == 0.0
