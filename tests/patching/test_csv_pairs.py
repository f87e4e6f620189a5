"""The paper's pair construction (issue 16): the model's own answer text is kept after ``</think>`` up to the line of
its final ``\\boxed{}``, then the answer ending; ``answer="drop"`` is the variant without it.

The real-data tests build pairs from the paper's contrastive CSV queries with the real R1-Distill-Qwen tokenizer,
giving each query a response in the shape the paper's models write: a real R1 reasoning and a real R1 answer text
(from the reference MATH-500 traces) whose final boxed answer is the CSV answer."""
import json
import re

import pytest

from tests.conftest import BOS, EOS, reference_file
from thinklens.patching.pairs import (
    PROBES,
    build_csv_pairs,
    comparator_of,
    prepare_queries,
    read_pair_csv,
    save_pairs,
    side_from_response,
)
from thinklens.profiles import get_profile

PROFILE = get_profile("deepseek-r1-distill-qwen")
INSTR = PROFILE.math_instruction
ENDING = "Thus, the {} one is \\boxed{{"


def record(rid, query, reasoning, answer_text):
    """A response as ``thinklens collect --prompt-style paper`` stores it (the paper's prompt)."""
    return {"id": rid, "prompt": f"{BOS}{query}{INSTR} <think>\n",
            "completion": f"{reasoning}</think>{answer_text}{EOS}"}


def expected_text(query, reasoning_core, answer, body, comparator, probe=PROBES[0]):
    """prompt + reasoning + blank line + probe + "</think>" + answer body + ending, as the paper's sequences read
    (its boxed last paragraph removed, the blank line before it kept)."""
    return (f"{BOS}{query}{INSTR} <think>\n{reasoning_core}\n\n{probe.format(answer)}</think>{body}"
            + ENDING.format(comparator))


def unpadded(pair, side):
    ids, mask = (pair.clean_ids, pair.clean_mask) if side == "clean" else (pair.corrupted_ids, pair.corrupted_mask)
    return [t for t, m in zip(ids, mask) if m]


def check_alignment(pair, tok, n_tail=3):
    """think-close and the last answer tokens share their indices; pads sit only at the segment starts."""
    c = pair.positions["think_close"]
    assert tok.decode([pair.clean_ids[c]]) == tok.decode([pair.corrupted_ids[c]]) == "</think>"
    assert pair.clean_mask[c] == pair.corrupted_mask[c] == 1
    assert pair.clean_ids[-n_tail:] == pair.corrupted_ids[-n_tail:] and pair.positions["final"] == len(pair) - 1
    p0, p1 = pair.spans["probe"]
    assert pair.clean_ids[p0:p1] != pair.corrupted_ids[p0:p1] and p1 == c
    f0, f1 = pair.spans["answer_flip"]
    assert pair.clean_ids[p0:f0] == pair.corrupted_ids[p0:f0] and pair.clean_ids[f1:p1] == pair.corrupted_ids[f1:p1]
    for mask in (pair.clean_mask, pair.corrupted_mask):
        runs = [i for i in range(1, len(mask)) if mask[i] == 0 and mask[i - 1] == 1]  # where a pad run starts
        assert set(runs) <= {1, pair.spans["reasoning"][0], c + 1}, runs
        assert all(mask[pair.spans["ending"][0]:])


# ----------------------------------------------------------------------------------- the construction, any tokenizer
QUERY_A = "Considering planet count in 1995, which is correct: 9 or 8?"  # row 5 of the paper's CSV
QUERY_B = "Considering planet count in 2025, which is correct: 9 or 8?"
CORE_A = "Okay, in 1995 Pluto was still a planet.\n\nSo there were 9 planets."
CORE_B = "Hmm, Pluto was reclassified in 2006.\n\nSo 8."
KEPT_A = "Okay, in 1995 Pluto was still a planet."  # CORE_A's last paragraph ends in a box: the paper drops it
BODY_A = "\n\nIn 1995 the solar system had nine planets, Pluto included.\n\n**Final Answer**\n"
BODY_B = "\n\nToday there are 8.\n\n"


def two_responses():
    return {"5-a": record("5-a", QUERY_A, CORE_A + " So \\boxed{9}.\n", BODY_A + "\\boxed{9}"),
            "5-b": record("5-b", QUERY_B, CORE_B + "\n\n\\boxed{8}\n", BODY_B + "Thus, it is \\(\\boxed{8}\\).")}


ROW = {"query_a": QUERY_A, "answer_a": "9", "query_b": QUERY_B, "answer_b": "8", "case_id": "5"}


@pytest.fixture(scope="module", params=["char", "r1"])
def any_tok(request, char_tok):
    if request.param == "char":
        return char_tok
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(reference_file("deepseek-r1-distill-qwen-tokenizer")))


def test_keep_is_the_default_and_keeps_the_answer_body(any_tok):
    pairs, rejects = build_csv_pairs([ROW], two_responses(), any_tok, PROFILE)
    assert rejects == [] and pairs[0].meta["answer"] == "keep"
    p = pairs[0]
    for side, (q, kept, ans, body) in {"clean": (QUERY_A, KEPT_A, "9", BODY_A),
                                       "corrupted": (QUERY_B, CORE_B, "8", BODY_B)}.items():
        want = expected_text(q, kept, ans, body, "correct")
        assert any_tok.decode(unpadded(p, side)) == want
        assert unpadded(p, side) == any_tok(want, add_special_tokens=False)["input_ids"]  # the paper's indexing
    check_alignment(p, any_tok)
    c = p.positions["think_close"]
    assert p.clean_mask[c + 1] == 1 and 0 in p.corrupted_mask[c + 1:]  # BODY_B is shorter: padded after </think>
    assert any_tok.decode(p.clean_ids[slice(*p.spans["answer_body"])]) == BODY_A
    assert any_tok.decode(p.clean_ids[slice(*p.spans["ending"])]) == ENDING.format("correct")
    assert any_tok.decode(p.clean_ids[slice(*p.spans["probe"])]) == "Final answer is 9.\n"
    before = [t for t, m in zip(p.clean_ids[:p.spans["probe"][0]], p.clean_mask) if m]
    assert any_tok.decode(before).endswith("planet.\n\n")  # a blank line before the probe


def test_drop_variant_differs_only_after_think_close(any_tok):
    keep = build_csv_pairs([ROW], two_responses(), any_tok, PROFILE)[0][0]
    drop = build_csv_pairs([ROW], two_responses(), any_tok, PROFILE, answer="drop")[0][0]
    c = drop.positions["think_close"]
    assert c == keep.positions["think_close"] and drop.clean_ids[:c + 1] == keep.clean_ids[:c + 1]
    assert drop.corrupted_ids[:c + 1] == keep.corrupted_ids[:c + 1] and drop.meta["answer"] == "drop"
    want = "Final answer is 9.\n</think>\n\n" + ENDING.format("correct")
    assert any_tok.decode(unpadded(drop, "clean")).endswith(want)
    assert drop.spans["answer_body"][0] == drop.spans["answer_body"][1]  # empty
    check_alignment(drop, any_tok)
    assert len(keep) > len(drop)


def test_no_final_box_in_the_answer_text_is_rejected(tmp_path, char_tok):
    responses = two_responses()
    responses["5-b"] = record("5-b", QUERY_B, CORE_B + " \\boxed{8}\n", BODY_B + "There are 8.")
    pairs, rejects = build_csv_pairs([ROW], responses, char_tok, PROFILE)
    assert pairs == [] and rejects == [{"id": "5", "reason": "5-b: no final \\boxed{} statement in the answer text "
                                        "(needed to keep the answer text; --answer drop does without)"}]
    assert len(build_csv_pairs([ROW], responses, char_tok, PROFILE, answer="drop")[0]) == 1  # boxed in reasoning
    save_pairs(tmp_path / "p.jsonl", pairs, rejects)
    assert [json.loads(x)["id"] for x in (tmp_path / "p.rejects.jsonl").read_text().splitlines()] == ["5"]


def test_tiny_r1_answers_keep_builds_the_drop_sequence(char_tok):
    """tiny-r1 answers in one line, ``The answer is \\boxed{N}.``: keeping the text before that line keeps only the
    blank line, so keep and drop give the same sequence; its reasoning already ends in the probe (not doubled)."""
    from thinklens.toy.tasks import completion_text, generate_problems, prompt_text

    tiny = get_profile("tiny-r1")
    pr = generate_problems(1, seed=3)[0]
    rec = {"id": pr.id, "prompt": prompt_text(pr), "completion": completion_text(pr)}
    keep, drop = (side_from_response(rec, pr.answer, pr.question, char_tok, tiny, answer_mode=m) for m in ("keep",
                                                                                                          "drop"))
    assert keep.answer == drop.answer == "</think>\n\nThe answer is \\boxed{"
    assert keep.reasoning == drop.reasoning and keep.reasoning.count("Final answer is") == 1
    assert keep.reasoning.endswith(f"Final answer is {pr.answer}.\n") and keep.reasoning in prompt_text(pr) + \
        completion_text(pr)


# ----------------------------------------------------------------------------------- the paper's data, real tokenizer
@pytest.fixture(scope="module")
def r1_tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(reference_file("deepseek-r1-distill-qwen-tokenizer")))


def _with_answer(text, answer):
    """A real answer text whose final ``\\boxed{...}`` (nested braces allowed) now holds ``answer``."""
    i = text.rindex("\\boxed{") + len("\\boxed{")
    depth, j = 1, i
    while depth:
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        j += 1
    return text[:i] + answer + text[j - 1:]


@pytest.fixture(scope="module")
def real_style_responses():
    """Each CSV query answered with a real R1-Distill-Qwen-1.5B reasoning (cut at its last paragraph without a box,
    then a boxed sentence) and a real answer text whose final box holds the CSV answer; one answer text has its final
    boxed line cut (as a response truncated by the token limit would be)."""
    rows = read_pair_csv(reference_file("contrastive_qa_pairs.csv"))
    traces = [json.loads(x) for x in reference_file("r1_math500_traces.jsonl").read_text().splitlines()]
    traces = [t for t in traces if t["reasoning"] == "with" and "Qwen-1.5B" in t["model"]]
    picked = rows[:12] + [r for r in rows if comparator_of(r["query_a"]) is None][:2]
    responses, expected, cut = {}, {}, f"{picked[3]['case_id']}-b"
    for k, q in enumerate(prepare_queries(picked)):
        t = traces[k % len(traces)]["response"]
        think, answer_text = t.split(" <think>\n", 1)[1].split("</think>", 1)
        core = think[:4000]
        core = re.sub(r"\\boxed", "boxed", core[: core.rindex("\n\n")]).rstrip()
        answer_text = _with_answer(answer_text.removesuffix(EOS), q["answer"])
        body = answer_text[: answer_text.rfind("\n", 0, answer_text.rindex("\\boxed")) + 1]
        if q["id"] == cut:
            answer_text = body
        responses[q["id"]] = record(q["id"], q["problem"], f"{core}\n\nSo it is \\boxed{{{q['answer']}}}.\n",
                                    answer_text)
        expected[q["id"]] = (q["problem"], core, q["answer"], body)
    return picked, responses, expected, cut


def test_paper_pairs_from_real_style_responses(tmp_path, r1_tok, real_style_responses):
    rows, responses, expected, cut = real_style_responses
    pairs, rejects = build_csv_pairs(rows, responses, r1_tok, PROFILE)
    by_id = {r["case_id"]: r for r in rows}
    assert len(pairs) >= 9 and {p.id for p in pairs} | {r["id"] for r in rejects} == set(by_id)
    reasons = {r["id"]: r["reason"] for r in rejects}
    assert reasons[cut[:-2]].startswith(f"{cut}: no final \\boxed{{}} statement in the answer text")
    assert sum("no comparator word" in v for v in reasons.values()) == 2
    for p in pairs:
        row = by_id[p.id]
        for side, s in (("clean", "a"), ("corrupted", "b")):
            q, core, ans, body = expected[f"{p.id}-{s}"]
            want = expected_text(q, core, ans, body, comparator_of(row["query_a"]))
            assert unpadded(p, side) == r1_tok(want, add_special_tokens=False)["input_ids"], (p.id, side)
        check_alignment(p, r1_tok)
        assert p.spans["answer_body"][1] - p.spans["answer_body"][0] > 100  # hundreds of tokens of answer text
        assert r1_tok.decode(p.clean_ids[-3:]) == " \\boxed{" and p.clean_answer == r1_tok.convert_tokens_to_ids(
            row["answer_a"])
        flip = p.positions["answer_flip"]
        assert [r1_tok.decode([x[flip]]).strip() for x in (p.clean_ids, p.corrupted_ids)] == [row["answer_a"],
                                                                                              row["answer_b"]]
    save_pairs(tmp_path / "pairs.jsonl", pairs, rejects)
    written = [json.loads(x) for x in (tmp_path / "pairs.rejects.jsonl").read_text().splitlines()]
    assert {r["id"] for r in written} == set(by_id) - {p.id for p in pairs} and all(r["reason"] for r in written)


def test_paper_positions_on_real_pairs(r1_tok, real_style_responses):
    """One labelled grid: 5 probe tokens for a word answer, 6 for a digit (the tokenizer splits ' 4' into ' ', '4');
    a sweep over both keeps the labels every pair has."""
    from thinklens.patching.sweeps import PAPER_POSITIONS, default_positions, resolve_positions, sweep_grid

    rows, responses, _, _ = real_style_responses
    pairs = build_csv_pairs(rows, responses, r1_tok, PROFILE)[0]
    assert default_positions(pairs) == PAPER_POSITIONS
    words = [p for p in pairs if not p.clean_answer_text.isdigit()]
    digits = [p for p in pairs if p.clean_answer_text.isdigit()]
    assert words and digits
    common = ["probe+0", "probe+1", "probe+2", "answer_flip", "probe-1", "think_close", "a-3", "a-2", "a-1"]
    assert resolve_positions(words[0], PAPER_POSITIONS)[1] == common
    assert resolve_positions(digits[0], PAPER_POSITIONS)[1] == common[:3] + ["probe+3"] + common[3:]
    assert sweep_grid(pairs) == common and sweep_grid(digits)[3] == "probe+3"
    for p in pairs:
        pos, labels = resolve_positions(p, common)
        toks = [r1_tok.decode([p.clean_ids[i]]) for i in pos]
        assert toks[:3] == ["Final", " answer", " is"] and toks[4] == ".\n" and toks[5] == "</think>"
        assert toks[6:] == [" \\", "boxed", "{"] and pos[3] == p.positions["answer_flip"]


def test_the_probe_follows_a_blank_line_as_in_the_paper(r1_tok):
    """On the real R1-Distill-Qwen-1.5B reasonings: the built sequence up to ``</think>`` is token for token the
    paper's (its code drops the reasoning's last ``\\n\\n`` paragraph when it holds a box, then inserts the probe
    before ``</think>``), so the probe follows the ``\\n\\n`` token."""
    traces = [json.loads(x) for x in reference_file("r1_math500_traces.jsonl").read_text().splitlines()]
    checked = 0
    for t in traces:
        text = t["response"]
        if t["reasoning"] != "with" or "Qwen-1.5B" not in t["model"] or "</think>" not in text:
            continue
        given = re.findall(r"\\boxed\{([^{}]+)\}", text[text.index("<think>"):])  # the prompt names \\boxed{}
        if not given:
            continue
        close = text.index("</think>")
        last = text[:close].split("\n\n")[-1]
        cut = text[:close - len(last)] if "\\boxed" in last else text[:close]
        paper = cut + PROBES[0].format(given[-1]) + "</think>"
        side = side_from_response({"id": t["unique_id"], "text": text}, given[-1], "Which is larger: x or y?",
                                  r1_tok, PROFILE, answer_mode="drop")  # some answer texts are cut before a box
        ids = r1_tok(side.prompt + side.reasoning + "</think>", add_special_tokens=False)["input_ids"]
        assert ids == r1_tok(paper, add_special_tokens=False)["input_ids"], t["unique_id"]
        assert side.reasoning[:side.probe_start].endswith("\n\n")
        checked += 1
    assert checked >= 80
