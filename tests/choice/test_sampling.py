import numpy as np
import pytest
from scipy.special import expit

from aihf.choice.sampling import (
    gaussian_bump_reward,
    sample_demonstrations,
    sample_preferences,
    total_variation,
    true_policy,
)


def test_gaussian_bump_reward_is_the_papers_truth():
    r = gaussian_bump_reward(50)
    i = 25
    expected = np.exp(-((i / 50 - 0.5) ** 2) / 8) / (2 * np.sqrt(2 * np.pi))
    assert r[i - 1] == pytest.approx(expected)
    assert r.argmax() == 24  # action 25, x = 0.5


def test_demonstrations_respect_coverage_and_frequencies():
    rng = np.random.default_rng(0)
    reward = np.array([0.0, 1.0, 2.0, -1.0])
    counts = sample_demonstrations(
        reward, 200_000, rng, beta=0.5, covered=np.array([True, True, True, False])
    )
    assert counts.sum() == 200_000 and counts[3] == 0
    restricted = true_policy(reward[:3], 0.5)
    np.testing.assert_allclose(counts[:3] / counts.sum(), restricted, atol=5e-3)


def test_preferences_per_pair_and_random_pairs():
    rng = np.random.default_rng(1)
    reward = np.array([0.0, 0.5, -1.0])
    prefs = sample_preferences(reward, rng, beta=2.0, per_pair=40_000)
    assert np.all(np.diag(prefs) == 0)
    np.testing.assert_array_equal((prefs + prefs.T)[np.triu_indices(3, 1)], 40_000)
    assert prefs[1, 0] / 40_000 == pytest.approx(expit(0.25), abs=0.01)
    random_pairs = sample_preferences(reward, rng, n_prefs=123)
    assert random_pairs.sum() == 123 and np.all(np.diag(random_pairs) == 0)
    with pytest.raises(ValueError):
        sample_preferences(reward, rng)


def test_total_variation():
    assert total_variation([1, 0], [0, 1]) == 1.0
    assert total_variation([0.5, 0.5], [0.5, 0.5]) == 0.0
