"""The paper's patching result, reproduced on the trained tiny-r1 (skipped until its weights are in the package)."""
import numpy as np
import pytest

from thinklens.patching.pairs import toy_pairs
from thinklens.patching.sweeps import patch_pair


@pytest.fixture(scope="module")
def tiny_results(tiny_r1):
    model, tok, profile = tiny_r1
    pairs, rejects = toy_pairs(6, 0, tok)
    assert not rejects
    out = []
    for pair in pairs:
        r = patch_pair(model, profile, pair, "prompt-head:6,answer_flip,final")
        q0 = next(i for i, (a, b) in enumerate(zip(pair.clean_ids, pair.corrupted_ids)) if a != b)
        diff = [i for i in range(q0, pair.spans["prompt"][1]) if pair.clean_ids[i] != pair.corrupted_ids[i]]
        q = patch_pair(model, profile, pair, diff)  # the differing operand in the question
        out.append((pair, r, q))
    return out


@pytest.mark.slow
def test_answer_flip_token_flips_the_answer(tiny_results):
    for pair, r, q in tiny_results:
        nld = np.array(r.nld)  # [n_positions, n_layers]
        assert abs(r.clean - r.corrupted) > 1.0, pair.id
        flip = nld[r.labels.index("answer_flip")]
        assert flip.max() >= 0.8, (pair.id, flip)
        q0 = next(i for i, (a, b) in enumerate(zip(pair.clean_ids, pair.corrupted_ids)) if a != b)
        head = [i for i, p in enumerate(r.positions[:6]) if p < q0]  # prompt tokens before the first difference
        assert np.all(np.abs(nld[head]) < 0.1), pair.id
        # the operand in the question barely matters once the reasoning states the answer (late layers)
        assert np.all(np.abs(np.array(q.nld)[:, -1]) < 0.1), (pair.id, q.nld)


@pytest.mark.slow
def test_layer_curves_have_the_papers_shape(tiny_results):
    """The reasoning token's effect fades in late layers while the final answer position's rises."""
    flip = np.mean([np.array(r.nld)[r.labels.index("answer_flip")] for _, r, _ in tiny_results], axis=0)
    final = np.mean([np.array(r.nld)[r.labels.index("final")] for _, r, _ in tiny_results], axis=0)
    assert flip[0] >= 0.8 and flip[-1] < 0.2, flip
    assert abs(final[0]) < 0.05 and final[-1] >= 0.8, final
    cross = np.argmax(final > flip)  # the first layer where the final position carries more than the reasoning token
    assert 0 < cross < len(flip), (flip, final)
