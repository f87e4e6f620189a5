import csv
import json
from pathlib import Path

import pytest

from thinklens.errors import ThinklensError
from thinklens.patching.pairs import (
    PROBES,
    Pair,
    PairRejected,
    assemble_pair,
    build_csv_pairs,
    comparator_of,
    load_pairs,
    prepare_queries,
    read_pair_csv,
    save_pairs,
    strip_boxed_ending,
)
from thinklens.profiles import get_profile

REF = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference"
BOS, USER, ASSISTANT = "<｜begin▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"


def response(rid, query, answer, *, boxed_in_reasoning=True, extra=""):
    """An R1-style response record as `thinklens collect` writes it."""
    think = (f"Okay, so I need to answer: {query} Let me think.{extra}\n\nComparing the two, the answer is {answer}."
             + (f" So the final answer is \\boxed{{{answer}}}." if boxed_in_reasoning else "") + "\n")
    return {"id": rid, "prompt": f"{BOS}{USER}{query}{ASSISTANT}<think>\n",
            "completion": f"{think}</think>\n\nThe answer is {answer}.\n\n\\boxed{{{answer}}}<｜end▁of▁sentence｜>"}


def test_helpers():
    assert comparator_of("Considering ocean by area, which is larger: Pacific or Atlantic?") == "larger"
    assert comparator_of("Is it big?") is None
    assert strip_boxed_ending("a.\n\nIt is X. So \\boxed{X}.\n") == "a.\n\n"  # the paper: the whole paragraph goes
    assert strip_boxed_ending("a.\n\n\\boxed{X}\n") == "a.\n\n"
    assert strip_boxed_ending("So \\boxed{X}.\n") == ""
    assert strip_boxed_ending("a.\n\nIt is X.\n") == "a.\n\nIt is X.\n"  # no box in the last paragraph: kept
    assert strip_boxed_ending("a \\boxed{X}.\n\nIt is X.\n") == "a \\boxed{X}.\n\nIt is X.\n"


def test_toy_pairs_name_both_answer_mentions(toy_pairs4, char_tok):
    for p in toy_pairs4:
        flip, step = p.positions["answer_flip"], p.positions["answer_step"]
        assert step < flip and p.clean_ids[step] == p.clean_ids[flip] != p.corrupted_ids[step]
        assert char_tok.decode(p.clean_ids[step - 1:step]) == "="  # "c=48*2=96": the result of the last step
        assert char_tok.decode(p.clean_ids[flip - 16:flip]) == "Final answer is "


def test_padded_pair_alignment(padded_pair, char_tok):
    p = padded_pair
    assert len(p.clean_ids) == len(p.corrupted_ids) == len(p.clean_mask)
    assert p.clean_mask.count(0) == 2 and p.corrupted_mask.count(0) == 0  # "7" vs "17" in prompt and reasoning
    for name in ("prompt", "reasoning", "answer"):
        a, b = p.spans[name]
        real_c = [t for t, m in zip(p.clean_ids[a:b], p.clean_mask[a:b]) if m]
        assert char_tok.decode(real_c) in ("", char_tok.decode(real_c))  # decodable
    flip = p.positions["answer_flip"]
    assert char_tok.decode([p.clean_ids[flip]]) == "1" and char_tok.decode([p.corrupted_ids[flip]]) == "2"
    assert p.positions["final"] == len(p) - 1 and char_tok.decode([p.clean_ids[-1]]) == "{"
    assert p.clean_ids[0] == char_tok.bos_token_id and p.clean_mask[0] == 1  # pads go after BOS
    r0, r1 = p.spans["reasoning"]
    assert p.clean_ids[r1 - 8:r1] != p.corrupted_ids[r1 - 8:r1]
    assert p.clean_ids[r1:] == p.corrupted_ids[r1:]  # identical answer endings
    assert Pair.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_rejects(char_tok):
    from thinklens.patching.pairs import Side

    def side(ans, probe_pad=""):
        r = f"x\nFinal answer is {probe_pad}{ans}.\n"
        a0 = r.rindex(ans)
        return Side(ans, f"{BOS}{USER}q{ASSISTANT}<think>\n", r, "</think>\n\nThe answer is \\boxed{", ans,
                    r.rindex("Final"), (a0, a0 + len(ans)))

    with pytest.raises(PairRejected, match="share their first token"):
        assemble_pair("p", side("12"), side("13"), char_tok, first_token_answers=True)
    with pytest.raises(PairRejected, match="not one"):
        assemble_pair("p", side("12"), side("23"), char_tok)
    with pytest.raises(PairRejected, match="line up"):
        assemble_pair("p", side("1"), side("2", probe_pad="("), char_tok)


def test_synthetic_csv_pairs(tmp_path, char_tok):
    """The paper's CSV path end to end with a character tokenizer (no reference data needed)."""
    path = tmp_path / "pairs.csv"
    rows = [
        {"query_a": "Considering size, which is larger: A or B?", "answer_a": "A",
         "query_b": "Considering weight, which is larger: A or B?", "answer_b": "B", "case_id": "7", "domain": "x"},
        {"query_a": "Considering x, which is taller: C or D?", "answer_a": "C",
         "query_b": "Considering y, which is taller: C or D?", "answer_b": "D", "case_id": "8", "domain": "x"},
    ]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    queries = prepare_queries(read_pair_csv(path))
    assert [q["id"] for q in queries] == ["7-a", "7-b", "8-a", "8-b"]
    responses = {q["id"]: response(q["id"], q["problem"], q["answer"], extra=" Hmm." * (q["side"] == "a"))
                 for q in queries}
    responses["8-b"] = response("8-b", rows[1]["query_b"], "C")  # the model got it wrong
    profile = get_profile("deepseek-r1-distill-qwen")
    pairs, rejects = build_csv_pairs(read_pair_csv(path), responses, char_tok, profile, answer="drop")
    assert [p.id for p in pairs] == ["7"] and rejects == [
        {"id": "8", "reason": "8-b: the response answered 'C', expected 'D'"}]
    p = pairs[0]
    text = char_tok.decode([t for t, m in zip(p.clean_ids, p.clean_mask) if m])
    # the paper drops the boxed last paragraph and keeps the blank line before it
    assert text.endswith("Let me think. Hmm.\n\nFinal answer is A.\n</think>\n\nThus, the larger one is \\boxed{")
    assert "\\boxed{A}" not in text
    assert char_tok.decode([p.corrupted_ids[p.positions["answer_flip"]]]) == "B"
    # prompt: "size" vs "weight" -> 2 clean pads; reasoning: +5 (" Hmm.") clean vs +2 (query echo) -> 3 corrupted pads
    assert p.clean_mask.count(0) == 2 and p.corrupted_mask.count(0) == 3
    save_pairs(tmp_path / "p.jsonl", pairs, rejects)
    assert load_pairs(tmp_path / "p.jsonl") == pairs
    assert (tmp_path / "p.rejects.jsonl").read_text().count("\n") == 1


def test_load_pairs_reports_bad_lines(tmp_path, padded_pair):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps(padded_pair.to_dict()) + "\n{bad\n" + json.dumps({"id": "x"}) + "\n")
    errors = []
    assert len(load_pairs(f, errors)) == 1
    assert [e["line"] for e in errors] == [2, 3]
    with pytest.raises(ThinklensError, match=":2:"):
        load_pairs(f)
    with pytest.raises(ThinklensError, match="missing columns"):
        (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
        read_pair_csv(tmp_path / "bad.csv")


@pytest.fixture(scope="module")
def r1_tok():
    if not (REF / "deepseek-r1-distill-qwen-tokenizer").is_dir():
        pytest.skip("reference data (../shared/reference) is absent")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(REF / "deepseek-r1-distill-qwen-tokenizer"))


@pytest.mark.parametrize("answer", ["keep", "drop"])
@pytest.mark.parametrize("probe", PROBES)
def test_paper_csv_with_real_tokenizer(r1_tok, probe, answer):
    rows = read_pair_csv(REF / "contrastive_qa_pairs.csv")[:4]
    responses = {}
    for q in prepare_queries(rows):
        responses[q["id"]] = response(q["id"], q["problem"], q["answer"], extra=" Wait." * (q["side"] == "b"))
    profile = get_profile("deepseek-r1-distill-qwen")
    pairs, rejects = build_csv_pairs(rows, responses, r1_tok, profile, probe, answer=answer)
    assert len(pairs) + len(rejects) == 4 and len(pairs) >= 3, rejects
    for p, row in zip(pairs, rows):
        assert p.clean_answer == r1_tok.convert_tokens_to_ids(row["answer_a"])
        flip = p.positions["answer_flip"]
        assert r1_tok.decode([p.clean_ids[flip]]).strip() == row["answer_a"]
        assert r1_tok.decode([p.corrupted_ids[flip]]).strip() == row["answer_b"]
        a0 = p.spans["answer"][0]
        tail = r1_tok.decode([t for t, m in zip(p.clean_ids[a0:], p.clean_mask[a0:]) if m])
        body = f"\n\nThe answer is {row['answer_a']}.\n\n" if answer == "keep" else "\n\n"
        assert tail == f"</think>{body}Thus, the {comparator_of(row['query_a'])} one is \\boxed{{"
        assert p.clean_ids[p.spans["ending"][0]:] == p.corrupted_ids[p.spans["ending"][0]:]
        assert r1_tok.decode([p.clean_ids[p.spans["reasoning"][0]]]) != "<think>"
        assert p.clean_ids[p.spans["reasoning"][0] - 1] == 151648  # <think> ends the prompt segment
        assert sum(p.clean_mask) + sum(p.corrupted_mask) < 2 * len(p)  # the " Wait." sides force padding


def test_pairs_prepare_skips_bad_csv_rows_and_names_them(tmp_path, capsys):
    """An empty field or a repeated case_id costs that row, reported as file:line, never the whole command; a file
    with no good row is refused in one line."""
    from thinklens.cli.main import main

    f = tmp_path / "p.csv"
    f.write_text('query_a,answer_a,query_b,answer_b,case_id\nq1,A,q2,B,0\n"multi\nline",,q4,D,1\nq5,E,q6,F,0\n'
                 "q7,G,q8,H,2\n")
    assert main(["pairs", "prepare", "--csv", str(f), "--output", str(tmp_path / "q.jsonl")]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["queries"] == 4 and json.loads(out)["bad_csv_rows"] == 2
    assert f"skipped {f}:4: empty field(s) answer_a (case_id '1')" in err  # the record's last physical line
    assert f"skipped {f}:5: case_id '0' repeats an earlier row" in err
    assert [json.loads(x)["id"] for x in (tmp_path / "q.jsonl").read_text().splitlines()] == ["0-a", "0-b", "2-a",
                                                                                              "2-b"]
    f.write_text("query_a,answer_a,query_b,answer_b,case_id\nq1,,q2,B,0\n")
    assert main(["pairs", "prepare", "--csv", str(f), "--output", str(tmp_path / "q.jsonl")]) == 2
    assert "no usable row (1 bad" in capsys.readouterr().err
