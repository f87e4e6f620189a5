import numpy as np
import pytest

from thinklens.errors import ThinklensError
from thinklens.patching.attribution import attribution_patching, spearman
from thinklens.patching.sweeps import patch_pair


def test_attribution_tracks_exact_patching(random_model, profile, toy_pairs4):
    from tests.patching.test_engine import conditioned_metric

    pair = toy_pairs4[1]
    metric = conditioned_metric(random_model, pair)
    attr = attribution_patching(random_model, profile, pair, metric=metric)
    T = len(pair)
    assert attr.scores["resid_pre"].shape == (T, 3)
    same = [i for i in range(T) if pair.clean_ids[i] == pair.corrupted_ids[i]]
    assert np.all(attr.scores["resid_pre"][same, 0] == 0)  # identical embeddings -> zero estimate
    exact = patch_pair(random_model, profile, pair, "last-reasoning:8,answer-tail:3", metric=metric,
                       attribution=True)
    assert exact.attribution_spearman is not None and exact.attribution_spearman > 0.5
    assert abs(attr.clean - exact.clean) < 1e-4 and abs(attr.corrupted - exact.corrupted) < 1e-4


def test_spearman_and_errors(qwen_model, profile, padded_pair):
    assert spearman([1, 2, 3, 4], [10, 20, 30, 50]) == pytest.approx(1.0)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ThinklensError, match="does not support"):
        attribution_patching(qwen_model, profile, padded_pair, kinds=("head",))
