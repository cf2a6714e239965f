"""ED-PBRL prompt design: the θ-agnostic information, Frank-Wolfe convergence, rounding, bad input."""

import itertools

import numpy as np
import pytest

from edpbrl_plugin.querying.design import PromptDesign, WordSlots, theta_agnostic_information


def random_slots(rng, n_slots=3, n_words=5, d=4):
    words = [[f"s{h}w{i}" for i in range(n_words)] for h in range(n_slots)]
    return WordSlots.from_lists(words, [rng.normal(size=(n_words, d)) for _ in range(n_slots)])


def random_policies(rng, slots, k):
    return [[rng.dirichlet(np.ones(len(t))) for t in slots.features] for _ in range(k)]


def test_k2_information_is_a_quarter_of_the_expected_difference_outer_product_slot_by_slot(rng):
    slots = random_slots(rng)
    policies = random_policies(rng, slots, 2)
    per_slot = theta_agnostic_information(slots, policies, k=2, per_slot=True)
    for h, table in enumerate(slots.features):
        expected = np.zeros((slots.dim, slots.dim))
        for a, b in itertools.product(range(len(table)), repeat=2):
            diff = table[a] - table[b]
            expected += policies[0][h][a] * policies[1][h][b] * np.outer(diff, diff)
        np.testing.assert_allclose(per_slot[h], expected / 4, atol=1e-12)
    np.testing.assert_allclose(sum(per_slot), theta_agnostic_information(slots, policies, k=2), atol=1e-12)


def test_kway_information_is_the_expected_mnl_fisher_at_theta_zero_per_slot(rng):
    slots = random_slots(rng, n_slots=1, n_words=3, d=3)
    k = 3
    policies = random_policies(rng, slots, k)
    table = slots.features[0]
    expected = np.zeros((3, 3))
    for words in itertools.product(range(len(table)), repeat=k):
        prob = np.prod([policies[q][0][w] for q, w in enumerate(words)])
        f = table[list(words)]
        mean = f.mean(axis=0)
        expected += prob * (f.T @ f / k - np.outer(mean, mean))
    np.testing.assert_allclose(theta_agnostic_information(slots, policies, k=k), expected, atol=1e-12)


@pytest.mark.parametrize("criterion", ["A", "D"])
def test_solver_information_matches_the_reference_formula_at_its_policies(rng, criterion):
    slots = random_slots(rng)
    design = PromptDesign(k=3, budget=10, criterion=criterion, rounds=3).fit(slots)
    reference = theta_agnostic_information(slots, design.policies_, k=3)
    np.testing.assert_allclose(design.information_, reference, atol=1e-4)
    for policy in design.policies_:
        assert all(abs(p.sum() - 1) < 1e-5 and (p >= 0).all() for p in policy)


@pytest.mark.parametrize("criterion", ["A", "D"])
def test_line_search_ascends_every_step_and_the_best_gap_goes_to_zero_at_the_known_optimum(criterion):
    """One shared policy over {±e1, ±e2}: concave objective, optimum uniform by symmetry."""
    table = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    slots = WordSlots.from_lists([["a", "b", "c", "d"]], [table], blank=False)
    design = PromptDesign(
        k=2, budget=10, criterion=criterion, step="line_search", shared_policy=True, rounds=200, steps_per_policy=1
    )
    design.fit(slots)
    objectives = [s.objective for s in design.history_] + [design.objective_]
    assert np.all(np.diff(objectives) >= -1e-6)
    assert design.best_gap_ < 1e-3
    reg = 1.0 / (1 * 10)
    optimum_matrix = 0.5 * 0.5 * np.eye(2) + reg * np.eye(2)  # (K−1)/K · Cov(uniform) + λ/(H·T)
    optimum = -np.trace(np.linalg.inv(optimum_matrix)) if criterion == "A" else np.linalg.slogdet(optimum_matrix)[1]
    assert design.objective_ == pytest.approx(optimum, abs=1e-3)
    np.testing.assert_allclose(design.policies_[0][0], 0.25, atol=0.02)


@pytest.mark.parametrize("schedule", ["block", "joint"])
@pytest.mark.parametrize("step", ["authors", "line_search"])
def test_separate_policies_the_line_search_ascends_every_step_and_no_design_ends_below_its_start(rng, step, schedule):
    """K separate policies: the objective is not jointly concave. The authors' first step (γ = 1) jumps each
    policy to one prompt and the objective dips far below the uniform start (at CLIP-like scale it never
    recovers, measured by ``edpbrl bench design``); the backtracking line search rises every step. Either
    way the design returned is the best iterate, so it is never worse than uniform policies."""
    slots = random_slots(rng, n_slots=4, n_words=40, d=24)
    design = PromptDesign(k=4, budget=50, step=step, schedule=schedule).fit(slots)
    objectives = np.array([s.objective for s in design.history_])
    moved = [s.policies for s in design.history_]  # 8 rounds x 3 steps, of one policy or of all four
    assert moved == ([(p,) for p in range(4) for _ in range(3)] * 8 if schedule == "block" else [(0, 1, 2, 3)] * 24)
    assert design.objective_ == pytest.approx(objectives.max(), rel=1e-4) or design.objective_ > objectives.max()
    assert design.objective_ > objectives[0]
    reference = theta_agnostic_information(slots, design.policies_, k=4)
    np.testing.assert_allclose(design.information_, reference, atol=1e-3)
    if step == "line_search":
        assert np.all(np.diff(objectives) >= -1e-6 * abs(objectives[0]))
        assert all(0.0 <= s.step_size <= 1.0 for s in design.history_)
    else:
        assert design.history_[0].step_size == 1.0 and objectives.min() < objectives[0]


def test_authors_schedule_reports_a_non_increasing_best_gap_and_improves_on_uniform(rng):
    slots = random_slots(rng, n_slots=4, n_words=10, d=6)
    design = PromptDesign(k=2, budget=20, step="authors").fit(slots)
    first_objective = design.history_[0].objective  # objective at the uniform start
    assert design.objective_ > first_objective
    assert design.best_gap_ == min(s.gap for s in design.history_)


def test_sampling_rounds_policies_to_prompts(rng):
    slots = random_slots(rng, n_slots=3, n_words=4)
    design = PromptDesign(k=2, budget=5).fit(slots)
    episodes = design.sample(2000, rng=0)
    assert episodes.shape == (2000, 2, 3)
    freq = np.bincount(episodes[:, 0, 1], minlength=5) / 2000
    np.testing.assert_allclose(freq, design.policies_[0][1], atol=0.04)
    prompt = slots.prompt(episodes[0, 0], base_prompt="a photo")
    assert prompt.startswith("a photo")
    dense = design.sample(3, rng=0, dense=True)
    assert dense.shape == (9, 2, 3)
    assert (dense[0, :, 1:] == 0).all() and (dense[2] == design.sample(3, rng=0)[0]).all()


def test_bad_inputs_raise(rng):
    with pytest.raises(ValueError, match="slot 1"):
        WordSlots.from_lists([["a"], []], [np.zeros((1, 2)), np.zeros((0, 2))])
    with pytest.raises(ValueError, match="rows"):
        WordSlots.from_lists([["a", "b"]], [np.zeros((3, 2))])
    with pytest.raises(ValueError, match="NaN"):
        WordSlots.from_lists([["a"]], [np.array([[np.nan, 1.0]])])
    slots = random_slots(rng)
    with pytest.raises(ValueError, match="reg"):
        PromptDesign(reg=0).fit(slots)
    with pytest.raises(ValueError, match="criterion"):
        PromptDesign(criterion="E").fit(slots)
    with pytest.raises(ValueError, match="schedule"):
        PromptDesign(schedule="random").fit(slots)
    with pytest.raises(ValueError, match="k must"):
        PromptDesign(k=1).fit(slots)
    with pytest.raises(ValueError, match="budget"):
        PromptDesign(budget=0).fit(slots)
