"""The paper's contrastive pairs: two responses to the two queries of a CSV row, cut as Zhang et al. cut them.

A row holds two contrastive prompts with the same answer choices ("Considering ocean by area, which is larger:
Pacific or Atlantic?" -> Pacific; "... by coastline ..." -> Atlantic). The model answers both with reasoning, and
each response becomes (checked token for token against the paper's released patching sequences)::

    prompt (BOS ... <think>) | reasoning, its last paragraph removed when it holds a \\boxed{} (the blank line
        before it kept), + probe "Final answer is {X}.\\n"
        | </think> | the model's own answer text up to the start of the line holding its final \\boxed{} (the blank
          line before it kept) + answer ending "Thus, the {comparator} one is \\boxed{"

``answer="keep"`` (the default, the paper's construction): the answer text stays, so the final position can read
the answer from the answer text (which restates it, often at length) as well as from the reasoning; the paper's
late-layer patching effect measures both routes. ``answer="drop"`` (a variant: shorter sequences, and it isolates
the reasoning route): the ending follows ``</think>\\n\\n`` directly. The next token after the final ``{`` *is* the
answer, and the probe line puts the answer-carrying token (``answer_flip``) at a known place at the end of the
reasoning. Padding (masked, at segment starts, see :mod:`thinklens.patching.align`) aligns the probe tokens,
``</think>`` and the last answer tokens. A pair that cannot be built is rejected with its reason (a wrong or
unfinished response, no final boxed statement in the answer text, answers that are not single distinct tokens...).
"""
from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

from thinklens.errors import ThinklensError, report_skipped
from thinklens.patching.align import Pair, PairRejected, Side, assemble_pair
from thinklens.profiles import Profile
from thinklens.traces import Trace

PROBES = ("Final answer is {}.\n", "Final answer is \\boxed{{{}}}.\n")  # the paper's patching_probe_phrases
CSV_COLUMNS = ("query_a", "answer_a", "query_b", "answer_b", "case_id")
ANSWER_MODES = ("keep", "drop")  # keep: the paper's construction (the default); drop: the ending follows </think>


def read_pair_csv(path: str | Path, errors: list[str] | None = None) -> list[dict[str, str]]:
    """Rows of the paper's contrastive pair CSV (``query_a, answer_a, query_b, answer_b, case_id, ...``).

    A bad row (an empty required field, a repeated ``case_id``) is reported in ``errors`` (else on stderr) as
    ``file:line: reason`` and skipped, so one broken row costs that pair, not the run; a file without the columns,
    or without one good row, is refused in one line.

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "p.csv"
    >>> _ = f.write_text("query_a,answer_a,query_b,answer_b,case_id\\nq1,A,q2,B,0\\nq3,,q4,D,1\\n")
    >>> bad = []
    >>> [r["answer_b"] for r in read_pair_csv(f, bad)], bad[0].split(": ", 1)[1]
    (['B'], "empty field(s) answer_a (case_id '1')")
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ThinklensError(f"{path}: missing columns {missing} (need {list(CSV_COLUMNS)})")
            rows = [(reader.line_num, r) for r in reader]  # line_num: the record's last physical line
    except OSError as err:
        raise ThinklensError(f"cannot read {path}: {err}") from None
    except (UnicodeDecodeError, csv.Error) as err:  # bytes that are not UTF-8, a broken quote, a huge field
        raise ThinklensError(f"{path}: not a readable UTF-8 CSV ({str(err)[:160]})") from None
    good, bad, seen = [], [], set()
    for line, r in rows:
        empty = [c for c in CSV_COLUMNS if not (r.get(c) or "").strip()]
        if empty:
            bad.append(f"{path}:{line}: empty field(s) {', '.join(empty)} (case_id {r.get('case_id')!r})")
        elif r["case_id"] in seen:
            bad.append(f"{path}:{line}: case_id {r['case_id']!r} repeats an earlier row")
        else:
            seen.add(r["case_id"])
            good.append(r)
    report_skipped(bad, errors)
    if not good:
        raise ThinklensError(f"{path}: no usable row ({len(bad)} bad, e.g. {bad[0] if bad else 'the file is empty'})")
    return good


def prepare_queries(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The problems to collect responses for: ids ``{case_id}-a`` / ``{case_id}-b`` (what ``pairs build`` joins).

    >>> [q["id"] for q in prepare_queries([{"query_a": "x", "answer_a": "A", "query_b": "y", "answer_b": "B",
    ...                                      "case_id": "3"}])]
    ['3-a', '3-b']
    """
    out = []
    for r in rows:
        for side in ("a", "b"):
            out.append({"id": f"{r['case_id']}-{side}", "problem": r[f"query_{side}"], "answer": r[f"answer_{side}"],
                        "case_id": r["case_id"], "side": side, "domain": r.get("domain")})
    return out


_COMPARATOR = re.compile(r"which (?:one )?is (?:the )?([A-Za-z-]+)", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def comparator_of(query: str) -> str | None:
    """The comparator word of a query.

    >>> comparator_of("Considering ocean by area, which is larger: Pacific or Atlantic?")
    'larger'
    """
    m = _COMPARATOR.search(query)
    return m.group(1) if m else None


def strip_boxed_ending(reasoning: str) -> str:
    """The reasoning as the paper cuts it before the probe: when its last paragraph (split on ``"\\n\\n"``) holds a
    ``\\boxed``, that paragraph goes and the blank line before it stays, so the probe follows a blank line
    (``...<last line>\\n\\nFinal answer is N.\\n</think>``; all 200 reference R1 reasonings end this way); a
    reasoning without a boxed last paragraph is kept as it is.

    >>> strip_boxed_ending("a.\\n\\nIt is X.\\nSo \\\\boxed{X}.\\n")
    'a.\\n\\n'
    >>> strip_boxed_ending("a.\\n\\nIt is X.\\n")
    'a.\\n\\nIt is X.\\n'
    """
    last = reasoning.split("\n\n")[-1]
    return reasoning[: len(reasoning) - len(last)] if "\\boxed" in last else reasoning


def answer_body(answer_text: str) -> str | None:
    """The answer text up to the start of the line that holds its final ``\\boxed{}`` (the blank line before that
    line kept): what the paper keeps of the model's answer. None when there is no boxed statement.

    >>> answer_body("\\n\\nThe ocean is Pacific.\\n\\n**Final Answer**\\n\\\\boxed{Pacific}")
    '\\n\\nThe ocean is Pacific.\\n\\n**Final Answer**\\n'
    >>> answer_body("\\n\\nThus, the larger one is \\\\(\\\\boxed{Pacific}\\\\).")
    '\\n\\n'
    """
    i = answer_text.rfind("\\boxed")
    return None if i < 0 else answer_text[: answer_text.rfind("\n", 0, i) + 1]


def side_from_response(record: dict[str, Any], answer: str, query: str, tokenizer: Any, profile: Profile,
                       probe: str = PROBES[0], answer_mode: str = "keep") -> Side:
    """Cut a collected response: reasoning + probe, then ``</think>``, the kept answer text (``answer_mode="keep"``;
    nothing with ``"drop"``) and the answer ending.

    >>> from thinklens.patching.pairs import toy_tokenizer
    >>> from thinklens.profiles import get_profile
    >>> rec = {"id": "0-a", "prompt": "<｜begin▁of▁sentence｜>Which is larger: 7 or 2? <think>\\n",
    ...        "completion": "7>2.\\n</think>\\n\\n7 is larger.\\n\\n\\\\boxed{7}<｜end▁of▁sentence｜>"}
    >>> s = side_from_response(rec, "7", "Which is larger: 7 or 2?", toy_tokenizer(),
    ...                        get_profile("deepseek-r1-distill-qwen"))
    >>> s.reasoning, s.answer
    ('\\n7>2.\\nFinal answer is 7.\\n', '</think>\\n\\n7 is larger.\\n\\nThus, the larger one is \\\\boxed{')
    """
    if answer_mode not in ANSWER_MODES:
        raise ThinklensError(f"answer mode {answer_mode!r}: choose from {ANSWER_MODES}")
    rid = str(record.get("id"))
    try:
        trace = Trace.from_record(record, tokenizer, profile)
    except ThinklensError as err:
        raise PairRejected(f"{rid}: {err}") from None
    if not trace.finished:
        raise PairRejected(f"{rid}: the reasoning never closed")
    close_end = trace.char_span(trace.think_close)[1]
    answer_text = trace.text[close_end: trace.char_span(trace.eos)[0] if trace.eos else len(trace.text)]
    body = answer_body(answer_text)
    if answer_mode == "keep" and body is None:
        raise PairRejected(f"{rid}: no final \\boxed{{}} statement in the answer text (needed to keep the answer "
                           "text; --answer drop does without)")
    given = _BOXED.findall(answer_text) or _BOXED.findall(trace.span_text(trace.reasoning))
    if not given:
        raise PairRejected(f"{rid}: no \\boxed{{}} answer in the response")
    if given[-1].strip().lower() != answer.strip().lower():
        raise PairRejected(f"{rid}: the response answered {given[-1]!r}, expected {answer!r}")
    start = trace.char_span(trace.reasoning)[0]
    reasoning = strip_boxed_ending(trace.text[start:trace.char_span(trace.think_close)[0]])
    if not reasoning.endswith("\n"):  # the probe starts a line (the paper never met a reasoning without one)
        reasoning += "\n"
    line = probe.format(answer)
    if reasoning.endswith(line) and reasoning[: -len(line)][-1:] in ("", "\n"):  # already ends in the probe (tiny-r1)
        reasoning = reasoning[: -len(line)]
    a0 = len(reasoning) + line.index(answer)
    ending = profile.answer_ending
    if "{}" in ending:
        comp = comparator_of(query)
        if comp is None:
            raise PairRejected(f"{rid}: no comparator word ('which is X') in the query {query!r}")
        ending = ending.replace("{}", comp, 1)
    close = profile.think_close
    if answer_mode == "drop":
        body, ending = "", "\n\n" + ending
    return Side(id=rid, prompt=trace.text[:start], reasoning=reasoning + line, answer=close + body + ending,
                answer_text=answer, probe_start=len(reasoning), answer_chars=(a0, a0 + len(answer)),
                answer_body=(len(close), len(close) + len(body)))


def build_csv_pairs(rows: list[dict[str, str]], responses: dict[str, dict], tokenizer: Any, profile: Profile,
                    probe: str = PROBES[0], swap: bool = False, answer: str = "keep",
                    ) -> tuple[list[Pair], list[dict[str, Any]]]:
    """Pairs (clean = side a, corrupted = side b; ``swap`` reverses) and rejects ``{id, reason}`` for CSV rows.

    ``answer``: ``"keep"`` (the paper's construction, the model's own answer text stays) or ``"drop"``.

    >>> from thinklens.patching.csv_pairs import build_csv_pairs
    >>> from thinklens.patching.pairs import toy_tokenizer
    >>> from thinklens.profiles import get_profile
    >>> def rec(rid, q, a):
    ...     return {"id": rid, "prompt": f"<｜begin▁of▁sentence｜><｜User｜>{q}<｜Assistant｜><think>\\n",
    ...             "completion": f"So {a}.\\n</think>\\n\\n{a}.\\n\\n\\\\boxed{{{a}}}<｜end▁of▁sentence｜>"}
    >>> row = {"query_a": "Which is larger: 7 or 2?", "answer_a": "7", "query_b": "Which is larger: 7 or 9?",
    ...        "answer_b": "9", "case_id": "0"}
    >>> responses = {"0-a": rec("0-a", row["query_a"], "7"), "0-b": rec("0-b", row["query_b"], "9")}
    >>> pairs, rejects = build_csv_pairs([row], responses, toy_tokenizer(), get_profile("deepseek-r1-distill-qwen"))
    >>> len(pairs), rejects, pairs[0].meta["answer"]
    (1, [], 'keep')

    >>> import thinklens as tl
    >>> tok, prof = tl.load_tokenizer("tiny-r1"), tl.get_profile("tiny-r1")
    >>> rows = [{"case_id": "0", "query_a": "Let x=7. Which is larger: x or 5?", "answer_a": "x",
    ...          "query_b": "Let x=3. Which is larger: x or 5?", "answer_b": "5"}]
    >>> def response(q, reasoning, a):  # BOS + prompt + <think> reasoning </think> + answer text + final boxed line
    ...     return ("<｜begin▁of▁sentence｜><｜User｜>" + q + "<｜Assistant｜><think>\\n" + reasoning
    ...             + "\\n</think>\\n\\nSo the larger one is " + a + ".\\n\\n\\\\boxed{" + a + "}")
    >>> responses = {"0-a": {"id": "0-a", "text": response(rows[0]["query_a"], "7>5, so x.", "x")},
    ...              "0-b": {"id": "0-b", "text": response(rows[0]["query_b"], "3<5, so 5.", "5")}}
    >>> pairs, rejects = tl.build_csv_pairs(rows, responses, tok, prof)
    >>> p = pairs[0]
    >>> tok.decode(p.clean_ids[p.spans["answer"][0]:])  # the model's answer text is kept, then the answer ending
    '</think>\\n\\nSo the larger one is x.\\n\\nThe answer is \\\\boxed{'
    """
    if answer not in ANSWER_MODES:
        raise ThinklensError(f"answer mode {answer!r}: choose from {ANSWER_MODES}")
    pairs, rejects = [], []
    for r in rows:
        cid = str(r["case_id"])
        try:
            if comparator_of(r["query_a"]) != comparator_of(r["query_b"]):
                raise PairRejected("the two queries use different comparator words")
            sides = []
            for s in ("a", "b"):
                rec = responses.get(f"{cid}-{s}")
                if rec is None:
                    raise PairRejected(f"no response with id {cid}-{s}")
                sides.append(side_from_response(rec, r[f"answer_{s}"], r[f"query_{s}"], tokenizer, profile, probe,
                                                answer))
            if swap:
                sides.reverse()
            pairs.append(assemble_pair(cid, sides[0], sides[1], tokenizer,
                                       meta={"domain": r.get("domain"), "source": "csv", "answer": answer}))
        except PairRejected as err:
            rejects.append({"id": cid, "reason": str(err)})
    return pairs, rejects
