"""Any reasoning model: the three without-reasoning modes on a Qwen3-style chat template (a tiny random Qwen3 with
``enable_thinking``), prompted thinking with a several-token ``<think>``, budget forcing, and the refusals."""
from __future__ import annotations

import pytest

from tests.conftest import make_char_tokenizer
from thinklens.empirical.collect import GenerationSettings, collect, prompt_and_forced
from thinklens.empirical.thinking import answer_complete, close_text, without_text
from thinklens.errors import ThinklensError
from thinklens.jsonl import read_records
from thinklens.profiles import get_profile
from thinklens.traces import Trace

# Qwen3's generation-prompt logic, reduced to what matters here: enable_thinking=False writes an empty think block
QWEN3_TEMPLATE = (
    "{%- for m in messages %}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}")
PLAIN_TEMPLATE = QWEN3_TEMPLATE.split("{%- if enable_thinking")[0] + "{%- endif %}"  # no switch (an instruct model)
PROBLEMS = [{"id": f"p{i}", "problem": f"Compute {i}+{i + 2}.", "answer": str(2 * i + 2), "dataset": "t"}
            for i in range(3)]


def _tokenizer(template: str, delimiters_as_tokens: bool = True, merges=None):
    tok = make_char_tokenizer(delimiters_as_tokens, merges)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.eos_token = "<|im_end|>"
    tok.chat_template = template
    return tok


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    """(model, tokenizer, qwen3 profile) saved and loaded like a user's Qwen3 directory."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from thinklens.models import load_model

    torch.manual_seed(0)
    tok = _tokenizer(QWEN3_TEMPLATE)
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=8, intermediate_size=64, max_position_embeddings=512,
                      eos_token_id=tok.eos_token_id)
    d = tmp_path_factory.mktemp("m") / "Qwen3-tiny-random"
    Qwen3ForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    loaded = load_model(str(d), device="cpu")
    assert loaded.profile.name == "qwen3"
    return loaded


def _collect(loaded, tmp_path, reasoning, **settings):
    out = tmp_path / f"{reasoning}-{'-'.join(map(str, settings.values()))}.jsonl"
    s = GenerationSettings(max_new_tokens=6, batch_size=3, math_instruction=False, **settings)
    summary = collect(loaded, PROBLEMS, reasoning=reasoning, output=out, settings=s, model_name="q", progress=False)
    return summary, list(read_records(out))


@pytest.mark.parametrize("mode", ["forced", "template-off", "empty"])
def test_each_without_mode_on_a_template_with_the_switch(qwen3, tmp_path, mode):
    model, tok, profile = qwen3
    _, recs = _collect(qwen3, tmp_path, "without", without_mode=mode)
    messages = [{"role": "user", "content": PROBLEMS[0]["problem"]}]
    thinking_prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    off_prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    r = next(r for r in recs if r["id"] == "p0")
    assert r["without_mode"] == mode and r["thinking"] == "native" and r["generation"]["without_mode"] == mode
    assert r["prompt"] == thinking_prompt  # one prompt for both runs; the forced text carries the mode
    seen = r["prompt"] + r["completion"]
    expected = {"forced": thinking_prompt + "<think>\nOkay, I think I have finished thinking.\n</think>",
                "empty": thinking_prompt + "<think>\n\n</think>", "template-off": off_prompt}[mode]
    assert seen.startswith(expected)
    # the model was fed exactly that text: the prompt ids of the run are the tokenization of `expected`
    assert r["n_prompt_tokens"] + r["n_forced_tokens"] == len(tok(expected, add_special_tokens=False)["input_ids"])
    trace = Trace.from_record(r, tok, profile)
    assert trace.finished and trace.think_open.start >= len(tok(thinking_prompt)["input_ids"]) - 1
    body = trace.span_text(trace.reasoning)
    assert body.strip() == ("Okay, I think I have finished thinking." if mode == "forced" else "")


def test_with_run_on_qwen3_lets_the_model_open_its_think(qwen3, tmp_path):
    _, tok, profile = qwen3
    settings = GenerationSettings(math_instruction=False).resolved(profile)
    prompt, forced = prompt_and_forced("1+1?", tok, profile, settings, "with")
    assert prompt.endswith("<|im_start|>assistant\n") and forced == ""
    _, wo = prompt_and_forced("1+1?", tok, profile, settings, "without")
    assert wo.startswith("<think>\n")  # the forced text opens the block the template leaves to the model


def test_unsupported_modes_are_refused_in_one_line(qwen3, tmp_path):
    from thinklens.cli.main import main
    from thinklens.models import load_model

    tiny = load_model("tiny-r1", device="cpu")
    with pytest.raises(ThinklensError, match=r"not supported by the tiny-r1 profile .*supported: forced, empty$"):
        _collect(tiny, tmp_path, "without", without_mode="template-off")
    # a template that ignores the switch, under a profile that claims it: refused, naming the alternatives
    model, _, profile = qwen3
    with pytest.raises(ThinklensError, match="ignores enable_thinking=False; use --without-mode forced or empty"):
        _collect((model, _tokenizer(PLAIN_TEMPLATE), profile), tmp_path, "without", without_mode="template-off")
    assert main(["collect", "--model", "tiny-r1", "--dataset", "arithmetic", "--limit", "1", "--reasoning", "without",
                 "--without-mode", "template-off", "--output", str(tmp_path / "x.jsonl"), "--quiet"]) == 2


@pytest.mark.parametrize("merges", [None, [("\n", "<")]], ids=["split", "merged"])
def test_prompted_thinking_with_a_several_token_think_and_budget_forcing(qwen3, tmp_path, merges):
    """An instruct tokenizer without <think> tokens (7 characters = 7 tokens; or merged with the newline before it):
    the instruction mentions the delimiters, the prefilled <think> opens the reasoning, budget forcing closes it."""
    model, _, _ = qwen3
    tok = _tokenizer(PLAIN_TEMPLATE, delimiters_as_tokens=False, merges=merges)
    profile = get_profile("default")
    assert len(tok) <= model.config.vocab_size  # the Qwen3 fixture's vocabulary covers this tokenizer
    summary, recs = _collect((model, tok, profile), tmp_path, "with", thinking="prompted", on_unfinished="force-close",
                             answer_tokens=3)
    assert summary.n_forced_close == len(recs) == 3  # a random model never closes its reasoning itself
    for r in recs:
        assert r["thinking"] == "prompted" and r["forced_close"] and r["metadata"]["forced_close"]["reason"] == "budget"
        assert "<|im_start|>system\n" in r["prompt"] and "</think>" in r["prompt"]  # the instruction names both
        assert r["prompt"].endswith("<|im_start|>assistant\n<think>\n")
        assert r["reasoning_closed"] and profile.answer_prefix in r["completion"]
        trace = Trace.from_record(r, tok, profile)
        assert trace.span_text(trace.think_open).endswith("<think>") and len(trace.think_open) >= 3
        assert trace.think_open.start > trace.prompt.start + 20  # the prefilled one, not the instruction's
        assert trace.span_text(trace.prompt).startswith("<|im_start|>system")
        assert trace.finished and trace.span_text(trace.answer).lstrip().startswith(profile.answer_prefix.strip())
        reasoning = r["completion"].split("\n</think>")[0]
        assert trace.span_text(trace.reasoning).strip() == reasoning.strip()
    if merges:
        assert any("delimiter_by_offsets" in Trace.from_record(r, tok, profile).flags for r in recs)


def test_budget_forcing_pieces():
    tiny = get_profile("tiny-r1")
    assert close_text("7+5=12", tiny) == "\n</think>" + tiny.answer_prefix
    assert close_text("7+5=12\n", tiny) == "</think>" + tiny.answer_prefix
    assert answer_complete("12}. And then", False, tiny) and not answer_complete("1{2", False, tiny)
    assert answer_complete("", True, tiny) and not answer_complete("12", False, tiny.replace(answer_prefix="A: "))
    assert without_text(tiny, "forced") == "Okay, I think I have finished thinking.\n</think>"
    with pytest.raises(ThinklensError):
        without_text(tiny, "template-off")


def _graded(pid, mode, ok=True, finished=True, **kw):
    base = {"id": pid, "model": "m", "reasoning": mode, "is_correct": ok if finished else None, "finished": finished,
            "reasoning_closed": finished, "stopped_at_eos": True, "thinking": "prompted",
            "without_mode": "empty" if mode == "without" else None, "forced_close": False,
            "generation": {"max_new_tokens": 64, "thinking": "prompted", "on_unfinished": "drop"}}
    return {**base, **kw}


def test_evaluate_reports_modes_and_forced_closes_and_refuses_a_nearly_empty_pairing(tmp_path):
    from thinklens.empirical.evaluate import EvaluationResult, evaluate_records

    recs = [_graded(f"p{i}", m, forced_close=(m == "with" and i < 3)) for i in range(6) for m in ("with", "without")]
    e = evaluate_records(recs, n_resamples=20).models["m"]
    assert (e.n, e.thinking, e.without_mode, e.n_forced_close) == (6, "prompted", "empty", {"with": 3, "without": 0})
    res = evaluate_records(recs, n_resamples=20)
    res.save(tmp_path)
    assert EvaluationResult.load(tmp_path).models["m"].n_forced_close == {"with": 3, "without": 0}
    # 4 of 6 with-traces stopped inside the reasoning: refused with the option that fixes it, not p = 1.0
    bad = [_graded(f"p{i}", "with", finished=i >= 4, stopped_at_eos=True) for i in range(6)]
    bad += [_graded(f"p{i}", "without") for i in range(6)]
    with pytest.raises(ThinklensError, match=r"only 2 of 6 problems .*--on-unfinished force-close"):
        evaluate_records(bad, n_resamples=20)
    assert evaluate_records(bad, n_resamples=20, min_usable=0).models["m"].n == 2
    # traces cut by the budget: the advice names a budget
    cut = [_graded(f"p{i}", "with", finished=False, stopped_at_eos=False) for i in range(3)]
    cut += [_graded(f"p{i}", "without") for i in range(3)]
    with pytest.raises(ThinklensError, match=r"only 0 of 3 .*--max-new-tokens 128"):
        evaluate_records(cut, n_resamples=20)


def test_results_json_carries_the_modes(tmp_path):
    from thinklens.empirical.evaluate import evaluate_records
    from thinklens.results import evaluation_summary
    from thinklens.rundir import RunPaths

    recs = [_graded(f"p{i}", m) for i in range(3) for m in ("with", "without")]
    evaluate_records(recs, n_resamples=20).save(tmp_path)
    s = evaluation_summary(RunPaths(tmp_path))["m"]
    assert (s["thinking"], s["without_mode"], s["n_forced_close"]) == ("prompted", "empty", {"with": 0, "without": 0})


def test_budget_forcing_answers_a_closed_reasoning_that_has_no_answer():
    """An instruct model asked to think often ends its turn right at the close (Qwen2.5-Coder-1.5B: 11 of 100
    arithmetic traces, every without-reasoning one): force-close appends the answer prefix and lets it answer
    (reason ``no_answer``); a trace with an answer is left alone, an unclosed one is closed as before."""
    from thinklens.empirical.backends import Generation
    from thinklens.empirical.thinking import force_close

    tok, profile = make_char_tokenizer(), get_profile("tiny-r1")

    class Answers:  # the answer the "model" gives to each forced prompt; records what it was asked
        prompts: list[str] = []

        def generate(self, prompts, settings, seed):
            self.prompts.extend(tok.decode(p) for p in prompts)
            return [Generation(tok("12}.")["input_ids"], "12}.", True) for _ in prompts]

    def gen(text, eos=True):
        return Generation(tok(text, add_special_tokens=False)["input_ids"], text, eos)

    texts = ["Q:", "Q:", "Q:", "Q:"]
    forced = ["", "", "", "Okay, I think I have finished thinking.\n</think>"]
    gens = [gen("7+5=12\n</think>"), gen("7+5=12\n</think>\n\nThe answer is \\boxed{12}."), gen("7+5", False),
            gen("")]
    settings = GenerationSettings(answer_tokens=4)
    backend = Answers()
    out = force_close(backend, texts, forced, gens, settings, tok, profile, seed=0)
    assert out[0].text == "7+5=12\n</think>" + profile.answer_prefix + "12}."
    assert out[0].meta["forced_close"]["reason"] == "no_answer" and out[0].meta["forced_close"]["answer_complete"]
    assert out[1] is gens[1]
    assert out[2].text == "7+5\n</think>" + profile.answer_prefix + "12}."
    assert out[2].meta["forced_close"]["reason"] == "budget"
    assert out[3].text == profile.answer_prefix + "12}." and out[3].meta["forced_close"]["reason"] == "no_answer"
    assert backend.prompts[-1].endswith("finished thinking.\n</think>" + profile.answer_prefix)
    assert len(backend.prompts) == 3
