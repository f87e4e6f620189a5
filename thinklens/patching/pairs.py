"""Contrastive pairs for activation patching, built as Zhang et al. build them.

A pair is two responses to two contrastive prompts with the same answer choices ("Considering ocean by area, which
is larger: Pacific or Atlantic?" -> Pacific; "... by coastline ..." -> Atlantic). Each response is turned into::

    prompt (BOS ... <think>) | reasoning (cut before its final answer) + probe "Final answer is {X}.\\n"
        | "</think>\\n\\n" + answer ending "Thus, the {comparator} one is \\boxed{"

so the model's next token after the final ``{`` *is* the answer, and the probe line puts the answer-carrying token
(``answer_flip``) at a known place at the end of the reasoning. A boxed final sentence inside the reasoning is
dropped (it would state the answer a second time). The segments are then padded so both sequences have equal
prompt / reasoning / answer lengths and the probe tokens line up.

Padding choice: pads are inserted at the *start* of a segment (after BOS for the prompt), get attention mask 0, and
take a slot in the position ids (``arange(T)`` over the padded sequence in every run). Aligned tokens thus share
their absolute position in both runs, a pad is never attended to, and the segment ends (what the per-token sweeps
patch) align exactly. The cost is a small gap in relative positions across a pad run, which RoPE models tolerate.

A pair is rejected with a stated reason (answers that are not single distinct tokens, probe tokens that do not
line up, an unfinished or wrong response...); rejects go to a file, never silently dropped.
"""
from __future__ import annotations

import csv
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from thinklens.errors import ThinklensError
from thinklens.profiles import Profile
from thinklens.traces import Trace

PROBES = ("Final answer is {}.\n", "Final answer is \\boxed{{{}}}.\n")  # the paper's patching_probe_phrases
CSV_COLUMNS = ("query_a", "answer_a", "query_b", "answer_b", "case_id")


class PairRejected(ThinklensError):
    """A pair that cannot be built; the message is the reason written to the rejects file."""


@dataclass
class Pair:
    """A clean/corrupted sequence pair of equal length, aligned segment by segment.

    ``positions``: named token positions (``answer_flip``: the answer-carrying token of the probe in the reasoning;
    ``think_close``; ``final``: the last position, where the answer is read). ``spans``: half-open ``[start, end)``
    of ``prompt``, ``reasoning`` and ``answer`` (identical in both sequences after padding).
    """

    id: str
    clean_id: str
    corrupted_id: str
    clean_ids: list[int]
    corrupted_ids: list[int]
    clean_mask: list[int]
    corrupted_mask: list[int]
    clean_answer: int  # token id of the clean answer (read at the final position)
    corrupted_answer: int
    clean_answer_text: str
    corrupted_answer_text: str
    positions: dict[str, int]
    spans: dict[str, list[int]]
    tokens: list[str] = field(default_factory=list)  # clean token strings, for figure tick labels
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        lens = {len(self.clean_ids), len(self.corrupted_ids), len(self.clean_mask), len(self.corrupted_mask)}
        if len(lens) != 1:
            raise ThinklensError(f"pair {self.id}: clean/corrupted ids and masks differ in length")
        if self.clean_answer == self.corrupted_answer:
            raise ThinklensError(f"pair {self.id}: clean and corrupted answer tokens are equal")
        for name, p in self.positions.items():
            if not 0 <= p < len(self.clean_ids):
                raise ThinklensError(f"pair {self.id}: position {name}={p} outside the sequence")

    def __len__(self) -> int:
        return len(self.clean_ids)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Pair:
        try:
            return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
        except TypeError as err:
            raise ThinklensError(f"pair record {d.get('id')!r}: {err}") from None


@dataclass
class Side:
    """One response cut into the three texts of a patching sequence (before tokenization)."""

    id: str
    prompt: str  # BOS ... think-open
    reasoning: str  # reasoning body + probe line
    answer: str  # think-close + answer ending (ends where the answer token is predicted)
    answer_text: str
    probe_start: int  # char offset of the probe line in `reasoning`
    answer_chars: tuple[int, int]  # char span of the answer inside `reasoning` (in the probe)
    named_chars: dict[str, tuple[int, int]] = field(default_factory=dict)  # more named spans in `reasoning`


def _tokenize(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def _tokens_covering(offsets: list[tuple[int, int]], a: int, b: int) -> list[int]:
    return [i for i, (s, e) in enumerate(offsets) if s < b and e > a]


def assemble_pair(pid: str, clean: Side, corrupted: Side, tokenizer: Any, *, pad_id: int | None = None,
                  first_token_answers: bool = False, meta: dict | None = None) -> Pair:
    """Tokenize both sides segment by segment, check the answers and the probe, and pad into aligned sequences.

    ``first_token_answers``: the answers may span several tokens and are compared by their first token (tiny-r1's
    numbers); otherwise each must be exactly one token, as in the paper."""
    sides = []
    for s in (clean, corrupted):
        p_ids, _ = _tokenize(tokenizer, s.prompt)
        r_ids, r_off = _tokenize(tokenizer, s.reasoning)
        a_ids, _ = _tokenize(tokenizer, s.answer)
        ans = _tokenize(tokenizer, s.answer_text)[0]
        if not ans:
            raise PairRejected(f"{s.id}: empty answer")
        if len(ans) != 1 and not first_token_answers:
            raise PairRejected(f"{s.id}: answer {s.answer_text!r} is {len(ans)} tokens, not one")
        probe = _tokens_covering(r_off, s.probe_start, len(s.reasoning))
        flip = _tokens_covering(r_off, *s.answer_chars)
        if not probe or not flip:
            raise PairRejected(f"{s.id}: probe line not found in the tokenized reasoning")
        sides.append((p_ids, r_ids, a_ids, ans[0], probe, flip))
    (pc, rc, ac, tc, probe_c, flip_c), (pb, rb, ab, tb, probe_b, flip_b) = sides
    if tc == tb:
        raise PairRejected(f"answers {clean.answer_text!r} and {corrupted.answer_text!r} share their first token")
    # probe tokens must line up counted from the reasoning end, and differ only inside the answer
    if len(probe_c) != len(probe_b) or [len(rc) - i for i in flip_c] != [len(rb) - i for i in flip_b]:
        raise PairRejected("probe tokens do not line up (the answers tokenize differently inside the probe)")
    flip_set = {len(rc) - i for i in flip_c}
    for i, j in zip(probe_c, probe_b):
        if len(rc) - i not in flip_set and rc[i] != rb[j]:
            raise PairRejected("probe tokens differ outside the answer token")
    if ac != ab:
        raise PairRejected("answer endings differ between the two responses")
    if pad_id is None:
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []

    def pad(seg_c: list[int], seg_b: list[int], after: int) -> tuple[list[int], list[int], list[int], list[int]]:
        n = max(len(seg_c), len(seg_b))
        out = []
        for seg in (seg_c, seg_b):
            k = n - len(seg)
            out.append((seg[:after] + [pad_id] * k + seg[after:], [1] * after + [0] * k + [1] * (len(seg) - after)))
        return out[0][0], out[1][0], out[0][1], out[1][1]

    after_c = 1 if bos and pc[:1] == bos and pb[:1] == bos else 0
    p_c, p_b, pm_c, pm_b = pad(pc, pb, after_c)
    r_c, r_b, rm_c, rm_b = pad(rc, rb, 0)
    n_p, n_r = len(p_c), len(r_c)
    clean_ids, corr_ids = p_c + r_c + ac, p_b + r_b + ab
    cmask, bmask = pm_c + rm_c + [1] * len(ac), pm_b + rm_b + [1] * len(ab)
    flip = n_p + n_r - (len(rc) - flip_c[0])
    positions = {"answer_flip": flip, "think_close": n_p + n_r, "final": len(clean_ids) - 1}
    for name, chars in clean.named_chars.items():  # kept when both sides have it at the same place
        if name in corrupted.named_chars:
            tc_ = _tokens_covering(_tokenize(tokenizer, clean.reasoning)[1], *chars)
            tb_ = _tokens_covering(_tokenize(tokenizer, corrupted.reasoning)[1], *corrupted.named_chars[name])
            if tc_ and tb_ and len(rc) - tc_[0] == len(rb) - tb_[0]:
                positions[name] = n_p + n_r - (len(rc) - tc_[0])
    spans = {"prompt": [0, n_p], "reasoning": [n_p, n_p + n_r], "answer": [n_p + n_r, len(clean_ids)]}
    tokens = [tokenizer.decode([t]) if m else "<pad>" for t, m in zip(clean_ids, cmask)]
    return Pair(id=pid, clean_id=clean.id, corrupted_id=corrupted.id, clean_ids=clean_ids, corrupted_ids=corr_ids,
                clean_mask=cmask, corrupted_mask=bmask, clean_answer=tc, corrupted_answer=tb,
                clean_answer_text=clean.answer_text, corrupted_answer_text=corrupted.answer_text,
                positions=positions, spans=spans, tokens=tokens, meta=dict(meta or {}))


# ------------------------------------------------------------------------------------------- the paper's CSV pairs
def read_pair_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows of the paper's contrastive pair CSV (``query_a, answer_a, query_b, answer_b, case_id, ...``)."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ThinklensError(f"{path}: missing columns {missing} (need {list(CSV_COLUMNS)})")
            rows = list(reader)
    except OSError as err:
        raise ThinklensError(f"cannot read {path}: {err}") from None
    for k, r in enumerate(rows, start=2):
        if not all((r.get(c) or "").strip() for c in CSV_COLUMNS):
            raise ThinklensError(f"{path}:{k}: empty field among {list(CSV_COLUMNS)}")
    return rows


def prepare_queries(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The problems to collect responses for: ids ``{case_id}-a`` / ``{case_id}-b`` (what ``pairs build`` joins)."""
    out = []
    for r in rows:
        for side in ("a", "b"):
            out.append({"id": f"{r['case_id']}-{side}", "problem": r[f"query_{side}"], "answer": r[f"answer_{side}"],
                        "case_id": r["case_id"], "side": side, "domain": r.get("domain")})
    return out


_COMPARATOR = re.compile(r"which (?:one )?is (?:the )?([A-Za-z-]+)", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def comparator_of(query: str) -> str | None:
    """The comparator word of a query ("which is larger: ..." -> "larger")."""
    m = _COMPARATOR.search(query)
    return m.group(1) if m else None


def strip_boxed_ending(reasoning: str) -> str:
    """The reasoning without trailing lines/sentences that state a boxed answer."""
    lines = reasoning.rstrip().split("\n")
    while lines and "\\boxed" in lines[-1]:
        sentences = re.split(r"(?<=[.!?])\s+", lines[-1].strip())
        while sentences and "\\boxed" in sentences[-1]:
            sentences.pop()
        if sentences:
            lines[-1] = " ".join(sentences)
            break
        lines.pop()
    return "\n".join(lines).rstrip()


def side_from_response(record: dict[str, Any], answer: str, query: str, tokenizer: Any, profile: Profile,
                       probe: str = PROBES[0]) -> Side:
    """Cut a collected response before its final answer and append the probe and the answer ending."""
    rid = str(record.get("id"))
    try:
        trace = Trace.from_record(record, tokenizer, profile)
    except ThinklensError as err:
        raise PairRejected(f"{rid}: {err}") from None
    if not trace.finished:
        raise PairRejected(f"{rid}: the reasoning never closed")
    given = _BOXED.findall(trace.span_text(trace.answer)) or _BOXED.findall(trace.span_text(trace.reasoning))
    if not given:
        raise PairRejected(f"{rid}: no \\boxed{{}} answer in the response")
    if given[-1].strip().lower() != answer.strip().lower():
        raise PairRejected(f"{rid}: the response answered {given[-1]!r}, expected {answer!r}")
    start = trace.char_span(trace.reasoning)[0]
    body = strip_boxed_ending(trace.text[start:trace.char_span(trace.think_close)[0]])
    reasoning = body + "\n" if body.strip() else "\n"
    line = probe.format(answer)
    a0 = len(reasoning) + line.index(answer)
    ending = profile.answer_ending
    if "{}" in ending:
        comp = comparator_of(query)
        if comp is None:
            raise PairRejected(f"{rid}: no comparator word ('which is X') in the query {query!r}")
        ending = ending.replace("{}", comp, 1)
    return Side(id=rid, prompt=trace.text[:start], reasoning=reasoning + line,
                answer=f"{profile.think_close}\n\n{ending}", answer_text=answer, probe_start=len(reasoning),
                answer_chars=(a0, a0 + len(answer)))


def build_csv_pairs(rows: list[dict[str, str]], responses: dict[str, dict], tokenizer: Any, profile: Profile,
                    probe: str = PROBES[0], swap: bool = False) -> tuple[list[Pair], list[dict[str, Any]]]:
    """Pairs (clean = side a, corrupted = side b; ``swap`` reverses) and rejects ``{id, reason}`` for CSV rows."""
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
                sides.append(side_from_response(rec, r[f"answer_{s}"], r[f"query_{s}"], tokenizer, profile, probe))
            if swap:
                sides.reverse()
            pairs.append(assemble_pair(cid, sides[0], sides[1], tokenizer,
                                       meta={"domain": r.get("domain"), "source": "csv"}))
        except PairRejected as err:
            rejects.append({"id": cid, "reason": str(err)})
    return pairs, rejects


# ------------------------------------------------------------------------------------------------ tiny-r1 pairs
def toy_pairs(n: int, seed: int, tokenizer: Any, split: str = "test") -> tuple[list[Pair], list[dict[str, Any]]]:
    """Pairs from ``thinklens.toy.tasks.contrastive_pairs``: their reasoning already ends in the probe
    ``Final answer is N.``; the answer ending is ``The answer is \\boxed{``; answers compare by first character.

    Besides ``answer_flip`` (N's first digit in the probe), ``answer_step`` names N's first digit where the last
    computation line writes it (``c=48*2=96``): the answer is stated twice in the reasoning, and a model may read
    it from either."""
    from thinklens.toy.tasks import ANSWER_PREFIX, THINK_END, contrastive_pairs, prompt_text

    pairs, rejects = [], []
    for a, b in contrastive_pairs(n, seed, split=split):
        sides = [Side(id=p.id, prompt=prompt_text(p), reasoning=p.reasoning, answer=f"{THINK_END}\n\n{ANSWER_PREFIX}",
                      answer_text=p.answer, probe_start=p.reasoning.rindex("Final answer is "),
                      answer_chars=tuple(p.answer_char_span), named_chars=_step_chars(p)) for p in (a, b)]
        pid = a.id.removesuffix("-a")
        try:
            pairs.append(assemble_pair(pid, sides[0], sides[1], tokenizer, first_token_answers=True,
                                       meta={"source": "tiny-r1", "kind": a.kind, "question_a": a.question,
                                             "question_b": b.question}))
        except PairRejected as err:
            rejects.append({"id": pid, "reason": str(err)})
    return pairs, rejects


def _step_chars(p: Any) -> dict[str, tuple[int, int]]:
    """Char span of the answer at the end of the last computation line (just before the probe line), if there."""
    end = p.reasoning.rindex("Final answer is ") - 1  # the "\n" ending the last step
    start = end - len(p.answer)
    return {"answer_step": (start, end)} if start >= 0 and p.reasoning[start:end] == p.answer else {}


# ------------------------------------------------------------------------------------------------------- pair files
def save_pairs(path: str | Path, pairs: list[Pair], rejects: list[dict[str, Any]] | None = None,
               rejects_path: str | Path | None = None) -> None:
    """Write pairs as JSONL (and the rejects, with their reasons, next to them)."""
    from thinklens.jsonl import JsonlWriter

    with JsonlWriter(path, overwrite=True) as w:
        for p in pairs:
            w.write(p.to_dict())
    if rejects is not None:
        with JsonlWriter(rejects_path or rejects_file(path), overwrite=True) as w:
            for r in rejects:
                w.write(r)


def rejects_file(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(p.stem + ".rejects.jsonl")


def load_pairs(path: str | Path, errors: list[dict[str, Any]] | None = None) -> list[Pair]:
    """Read a pair file; bad lines are appended to ``errors`` as ``{line, error}`` (or raise when it is None)."""
    from thinklens.jsonl import read_jsonl

    if not Path(path).is_file():
        raise ThinklensError(f"no such pair file: {path}")
    pairs = []
    for line in read_jsonl(path):
        err = line.error
        if err is None:
            try:
                pairs.append(Pair.from_dict(line.record))
                continue
            except (ThinklensError, KeyError) as e:
                err = str(e)
        if errors is None:
            raise ThinklensError(f"{path}:{line.lineno}: {err}")
        errors.append({"line": line.lineno, "error": err})
    return pairs


def read_responses(path: str | Path) -> tuple[dict[str, dict], list[dict[str, Any]]]:
    """Collected responses by id, and ``{id, reason}`` entries for lines that cannot be used (file:line named)."""
    from thinklens.jsonl import read_jsonl
    from thinklens.traces import record_id

    if not Path(path).is_file():
        raise ThinklensError(f"no such responses file: {path}")
    out, bad = {}, []
    for line in read_jsonl(path):
        if line.error is not None:
            bad.append({"id": None, "reason": f"{line.where}: {line.error}"})
            continue
        rid = record_id(line.record, line.lineno)
        if rid in out:
            bad.append({"id": rid, "reason": f"{line.where}: duplicate id {rid!r} (the first one is used)"})
            continue
        out[rid] = line.record
    return out, bad


def toy_tokenizer() -> Any:
    """tiny-r1's tokenizer: from the model directory when it exists, else built (identical by construction)."""
    from thinklens.errors import ModelLoadError
    from thinklens.models import load_tokenizer

    try:
        return load_tokenizer("tiny-r1")
    except ModelLoadError:
        from thinklens.toy.tokenizer import build_tokenizer

        return build_tokenizer()
