"""The paper's patching result, reproduced on the trained tiny-r1 (skipped until its weights are in the package).

tiny-r1 states the answer twice in its reasoning: as the result of the last computation line (``answer_step``)
and in the probe ``Final answer is N.`` (``answer_flip``). Which one it reads is the model's choice, so the tests
take the answer-carrying reasoning token to be the one of the two with the larger effect, and check that it is
carried: NLD >= 0.8 at some layer."""
import numpy as np
import pytest

from thinklens.patching.pairs import toy_pairs
from thinklens.patching.sweeps import patch_pair

N_PAIRS = 4


@pytest.fixture(scope="module")
def tiny_results(tiny_r1):
    model, tok, profile = tiny_r1
    pairs, rejects = toy_pairs(N_PAIRS, 0, tok)
    assert not rejects
    out = []
    for pair in pairs:
        r = patch_pair(model, profile, pair, "prompt-head:3,answer_flip,answer_step,final")
        q0 = next(i for i, (a, b) in enumerate(zip(pair.clean_ids, pair.corrupted_ids)) if a != b)
        diff = [i for i in range(q0, pair.spans["prompt"][1]) if pair.clean_ids[i] != pair.corrupted_ids[i]]
        q = patch_pair(model, profile, pair, diff)  # the differing operand(s) in the question
        out.append((pair, r, q, q0))
    return out


def _row(r, name):
    return np.array(r.nld)[r.labels.index(name)]  # [n_layers]


def _carrier(results):
    """The named reasoning position whose patch moves the answer most, on average over pairs."""
    return max(("answer_flip", "answer_step"), key=lambda n: np.mean([_row(r, n).max() for _, r, _, _ in results]))


@pytest.mark.slow
def test_answer_carrying_token_flips_the_answer(tiny_results):
    name = _carrier(tiny_results)
    for pair, r, q, q0 in tiny_results:
        assert abs(r.clean - r.corrupted) > 1.0, pair.id
        assert _row(r, name).max() >= 0.8, (pair.id, name, r.nld)
        nld = np.array(r.nld)
        head = [i for i, p in enumerate(r.positions[:3]) if p < q0]  # prompt tokens before the first difference
        assert np.all(np.abs(nld[head]) < 0.1), pair.id
        # far from the reasoning, the question's own operand does not decide the answer once the reasoning states it
        assert np.all(np.abs(np.array(q.nld)) < 0.1), (pair.id, q.nld)


@pytest.mark.slow
def test_layer_curves_have_the_papers_shape(tiny_results):
    """The reasoning token's effect fades in late layers while the final answer position's rises."""
    name = _carrier(tiny_results)
    carrier = np.mean([_row(r, name) for _, r, _, _ in tiny_results], axis=0)
    final = np.mean([_row(r, "final") for _, r, _, _ in tiny_results], axis=0)
    assert carrier.max() >= 0.8 and carrier[-1] < 0.2, carrier
    assert abs(final[0]) < 0.05 and final[-1] >= 0.8, final
    cross = int(np.argmax(final > carrier))  # first layer where the final position carries more than the reasoning
    assert 0 < cross and np.argmax(carrier) < cross, (carrier, final)
