import numpy as np
import torch

from thinklens.patching.metrics import LogitDiff, LogProbDiff, ProbDiff, answer_ranks, normalize


def test_logit_diff_and_ranks():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0], [5.0, 1.0, 2.0, 9.0]])  # [n, vocab]
    assert LogitDiff(1, 2)(logits).tolist() == [1.0, -1.0]
    clean_rank, corr_rank = answer_ranks(logits, 1, 2)
    assert clean_rank.tolist() == [0, 3] and corr_rank.tolist() == [1, 2]
    lp = LogProbDiff(1, 2)(logits)
    assert torch.allclose(lp, LogitDiff(1, 2)(logits))  # the log-partition cancels
    p = torch.softmax(logits, -1)
    assert torch.allclose(ProbDiff(1, 2)(logits), p[:, 1] - p[:, 2])


def test_normalize():
    assert np.allclose(normalize([2.0, 5.0, -1.0], clean=5.0, corrupted=2.0), [0.0, 1.0, -1.0])
    assert np.isnan(normalize(1.0, clean=2.0, corrupted=2.0))
