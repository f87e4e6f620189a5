"""Models larger than one GPU: a model spread by a ``device_map`` (accelerate's hooks, offloaded modules whose
parameters sit on ``meta``) gives the same attention rows, head scores and patching NLD as the plain model, and
``--device-map`` reaches ``from_pretrained`` from every model-loading command.

On a CPU the choices are "cpu" and offload ("disk"): the offloaded variant is the strict one, since its embedding,
first parameters and every other layer live on ``meta`` and run through ``AlignDevicesHook``s, so any code that takes
``next(model.parameters()).device`` as the input device fails on it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import one_torch_thread
from thinklens.models import load_model, parse_device_map
from thinklens.modules import input_device

OFFLOAD_MAP = {"model.embed_tokens": "disk", "model.layers.0": "cpu", "model.layers.1": "disk", "model.layers.2": "cpu",
               "model.layers.3": "disk", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "disk"}
TOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine two threads make these small forwards 10x slower."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def plain():
    torch.manual_seed(0)
    return load_model("tiny-r1", device="cpu", dtype="fp32")


@pytest.fixture(scope="module", params=["offload", "hooks"])
def spread(request, tmp_path_factory):
    """tiny-r1 loaded through ``from_pretrained(device_map=...)``: layers 1 and 3, the embedding and the (tied)
    unembedding offloaded; or every module on the CPU behind accelerate's hooks (``dispatch_model``)."""
    if request.param == "offload":
        loaded = load_model("tiny-r1", dtype="fp32", device_map=OFFLOAD_MAP,
                            offload_folder=str(tmp_path_factory.mktemp("offload")))
        assert next(loaded.model.parameters()).device.type == "meta"  # what the fixed code must not rely on
    else:
        from accelerate import dispatch_model

        loaded = load_model("tiny-r1", device="cpu", dtype="fp32")
        dispatch_model(loaded.model, {k: "cpu" for k in OFFLOAD_MAP}, force_hooks=True)
    assert hasattr(loaded.model.model.layers[1], "_hf_hook")
    assert input_device(loaded.model) == torch.device("cpu")
    return loaded


@pytest.fixture(scope="module")
def trace(plain):
    from thinklens.toy import full_text, generate_problems
    from thinklens.traces import Trace

    problem = generate_problems(1, seed=5)[0]
    return Trace.from_record({"id": problem.id, "text": full_text(problem)}, plain.tokenizer, plain.profile)


def test_attention_rows_and_head_scores_equal_the_plain_model(plain, spread, trace):
    from thinklens.attention.capture import RowsReducer, capture_attention
    from thinklens.attention.segments import _forward, trace_head_scores

    positions = list(range(trace.answer.start, trace.answer.end))
    rows = []
    for m in (plain.model, spread.model):
        red = RowsReducer()
        with capture_attention(m, positions, red):
            _forward(m, trace.ids)
        rows.append(red)
    for layer in range(4):
        a, b = rows[0].layer(layer), rows[1].layer(layer)  # [1, H, rows, T]
        assert a.shape == b.shape and float((a - b).abs().max()) <= TOL
    s0 = trace_head_scores(plain.model, trace, answer_profile=True)
    s1 = trace_head_scores(spread.model, trace, answer_profile=True)
    for name in s0.scores:
        np.testing.assert_allclose(s1.scores[name], s0.scores[name], atol=TOL)
    np.testing.assert_allclose(s1.answer_profile, s0.answer_profile, atol=TOL)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["fast", "naive"])
def test_patching_nld_equals_the_plain_model(plain, spread, engine):
    """The fast engine (KV cache + packed suffixes with a 4D mask) on every site kind, per head and attribution
    patching (a backward pass through the hooks); the naive one on the residual stream."""
    from thinklens.patching.pairs import toy_pairs
    from thinklens.patching.sweeps import patch_pair

    pair = toy_pairs(1, 0, plain.tokenizer)[0][0]
    for site in ("resid_pre", "resid_mid", "attn_out", "mlp_out", "resid_post") if engine == "fast" else ("resid_pre",):
        kw = dict(engine=engine, heads=site == "resid_pre" and engine == "fast",
                  attribution=site == "resid_pre" and engine == "fast")
        r0 = patch_pair(plain.model, plain.profile, pair, "answer_flip,final", site, **kw)
        r1 = patch_pair(spread.model, spread.profile, pair, "answer_flip,final", site, **kw)
        assert abs(r0.clean - r0.corrupted) > 1.0  # a pair with signal, so NLD is far from float noise
        np.testing.assert_allclose(r1.nld, r0.nld, atol=TOL)
        if kw["heads"]:
            np.testing.assert_allclose(r1.head_nld, r0.head_nld, atol=TOL)
        if kw["attribution"]:
            np.testing.assert_allclose(r1.attribution, r0.attribution, atol=TOL)


def test_generation_equals_the_plain_model(plain, spread, tmp_path):
    from thinklens.empirical.collect import GenerationSettings, collect
    from thinklens.empirical.datasets import load_problems

    problems = load_problems("arithmetic", limit=2)
    outs = [tmp_path / "plain.jsonl", tmp_path / "spread.jsonl"]
    for loaded, out in zip((plain, spread), outs):
        collect(loaded, problems, output=out, model_name="tiny-r1", progress=False,
                settings=GenerationSettings(max_new_tokens=24))
    assert outs[0].read_text() == outs[1].read_text()


def test_device_map_text_is_a_strategy_or_a_json_map(tmp_path):
    assert parse_device_map("auto") == "auto" and parse_device_map(None) is None
    f = tmp_path / "map.json"
    f.write_text(json.dumps({"model.layers.0": 0, "lm_head": "cpu"}))
    assert parse_device_map(str(f)) == {"model.layers.0": 0, "lm_head": "cpu"}
    from thinklens.errors import ThinklensError

    with pytest.raises(ThinklensError, match="JSON object"):
        parse_device_map("{model.layers.0: 0}")


def test_every_model_loading_command_passes_device_map_to_from_pretrained(monkeypatch, tmp_path):
    from transformers import AutoModelForCausalLM

    from thinklens.cli.main import main

    seen: list = []
    original = AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.append(kwargs.get("device_map"))
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    dm = ["--model", "tiny-r1", "--dtype", "fp32", "--device-map", json.dumps({"": "cpu"}), "--quiet"]
    traces, pairs = tmp_path / "t.jsonl", tmp_path / "pairs.jsonl"
    commands = [
        ["collect", *dm, "--dataset", "arithmetic", "--limit", "2", "--reasoning", "with", "--output", str(traces)],
        ["attention", *dm, "--traces", str(traces), "--output", str(tmp_path / "att")],
        ["heads", "induction", *dm[:-1], "--n-seqs", "2", "--output", str(tmp_path / "ind.json")],
        ["pairs", "toy", "--n", "1", "--output", str(pairs)],
        ["patch", *dm, "--pairs", str(pairs), "--positions", "final", "--output", str(tmp_path / "patch")],
    ]
    for argv in commands:
        n = len(seen)
        assert main(argv) == 0, argv
        assert argv[0] == "pairs" or seen[n:] == [{"": "cpu"}], (argv[0], seen[n:])
