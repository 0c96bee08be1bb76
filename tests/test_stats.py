"""95% intervals: Wilson for proportions, percentile bootstrap for the rest."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from diffusion_lessons.stats import Estimate, bootstrap_interval, proportion, wilson_interval


def test_wilson_matches_statsmodels_formula_and_known_values():
    # Wilson (1927); e.g. 195 / 200 -> [0.9428, 0.9893] (checked by hand from the closed form)
    est = wilson_interval(195, 200)
    assert est.value == pytest.approx(0.975)
    assert (est.low, est.high) == pytest.approx((0.94282, 0.98934), abs=1e-4)
    # at k = 0 the interval still has width: [0, 3.84 / (n + 3.84)]
    zero = wilson_interval(0, 100)
    assert zero.low == 0 and zero.high == pytest.approx(1.959964 ** 2 / (100 + 1.959964 ** 2), rel=1e-6)


def test_wilson_covers_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    p, n = 0.9, 200
    hits = sum(wilson_interval(int(k), n).low <= p <= wilson_interval(int(k), n).high
               for k in rng.binomial(n, p, size=2000))
    assert 0.93 <= hits / 2000 <= 0.97


def test_bootstrap_mean_interval_agrees_with_the_t_interval():
    x = np.random.default_rng(1).normal(2.0, 1.0, size=400)
    est = bootstrap_interval(x)
    low, high = scipy_stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=scipy_stats.sem(x))
    assert est.value == pytest.approx(x.mean())
    assert est.low == pytest.approx(low, abs=0.03) and est.high == pytest.approx(high, abs=0.03)
    assert bootstrap_interval(x, seed=3) == bootstrap_interval(x, seed=3)   # seeded


def test_proportion_of_flags_and_printing():
    est = proportion([True, False, True, True])
    assert est == wilson_interval(3, 4)
    assert str(est).endswith("(n=4)")
    assert Estimate(0.5, 0.4, 0.6, 10).overlaps(Estimate(0.65, 0.55, 0.7, 10))
    assert not Estimate(0.5, 0.4, 0.5, 10).overlaps(Estimate(0.65, 0.55, 0.7, 10))


@pytest.mark.parametrize("k, n, match", [(5, 0, "n must be >= 1"), (11, 10, "k must lie"), (1.5, 10, "k must be an int"),
                                         (-1, 10, "k must lie")])
def test_bad_counts_are_clear_errors(k, n, match):
    with pytest.raises(ValueError, match=match):
        wilson_interval(k, n)


def test_bad_bootstrap_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="at least 2"):
        bootstrap_interval([1.0])
    with pytest.raises(ValueError, match="finite"):
        bootstrap_interval([1.0, float("nan")])
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_interval([1.0, 2.0], resamples=10)
