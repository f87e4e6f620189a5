"""Aligned clean/corrupted sequences: :class:`Side` (one response as the texts of a patching sequence) and
:func:`assemble_pair`, which tokenizes two sides segment by segment and pads them into one :class:`Pair`.

A sequence is ``prompt | reasoning (ending in the probe line) | answer``, and the answer is
``think-close | answer body | answer ending``. The answer body is the model's own answer text (the paper keeps it;
it is empty when it is dropped) and the ending (``Thus, the larger one is \\boxed{``) is identical in both sides.

Padding: the shorter side gets pads at the *start* of its prompt (after BOS), of its reasoning and of its answer
body (after the think-close token), so that every segment has the same length in both sequences and the probe
tokens, think-close and the last answer tokens share their indices. Zhang et al. pad the same segment starts with
the EOS token and let the model attend to it; here a pad has attention mask 0 and is never attended. Which indices
align depends only on where the pads go and how many there are, which is the same in both schemes, so the two
constructions patch the same tokens at the same absolute positions (position ids are ``arange(T)`` over the padded
sequence in every run, as in the paper). What differs is the context the real tokens see: no EOS tokens in the
middle of the text (which the model never saw in training), at the cost of a gap in relative positions across a
pad run, which RoPE models tolerate.
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from thinklens.errors import ThinklensError


class PairRejected(ThinklensError):
    """A pair that cannot be built; the message is the reason written to the rejects file."""


@dataclass
class Pair:
    """A clean/corrupted sequence pair of equal length, aligned segment by segment.

    ``positions``: named token positions (``answer_flip``: the answer-carrying token of the probe in the reasoning;
    ``think_close``; ``final``: the last position, where the answer is read). ``spans``: half-open ``[start, end)``
    of ``prompt``, ``reasoning``, ``answer`` (from think-close to the end), ``probe`` (the probe line, the end of
    the reasoning), ``answer_flip`` (the answer's tokens inside the probe), ``answer_body`` (the kept answer text
    with its pads; empty when dropped) and ``ending``; identical in both sequences after padding. Pair files
    written before ``probe``/``answer_body``/``ending`` existed lack them.

    >>> from thinklens.patching.pairs import toy_pairs, toy_tokenizer
    >>> pair = toy_pairs(1, 0, toy_tokenizer())[0][0]
    >>> len(pair.clean_ids) == len(pair.corrupted_ids) and pair.positions["final"] == len(pair) - 1
    True
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
        from thinklens.validate import check_ids, check_int, check_mask, check_span, check_str

        what = f"pair {self.id!r}" if isinstance(self.id, str) else "pair"
        try:
            check_str(self.id, "id")
            for name in ("clean_id", "corrupted_id"):
                if not isinstance(getattr(self, name), str):
                    setattr(self, name, str(getattr(self, name)))
            self.clean_ids = check_ids(self.clean_ids, "clean_ids")
            self.corrupted_ids = check_ids(self.corrupted_ids, "corrupted_ids")
            T = len(self.clean_ids)
            if T == 0 or len(self.corrupted_ids) != T:
                raise ThinklensError(f"clean_ids ({T}) and corrupted_ids ({len(self.corrupted_ids)}) must be "
                                     "non-empty and of equal length")
            self.clean_mask = check_mask(self.clean_mask, "clean_mask", T)
            self.corrupted_mask = check_mask(self.corrupted_mask, "corrupted_mask", T)
            self.clean_answer = check_int(self.clean_answer, "clean_answer", 0)
            self.corrupted_answer = check_int(self.corrupted_answer, "corrupted_answer", 0)
            if self.clean_answer == self.corrupted_answer:
                raise ThinklensError("clean and corrupted answer tokens are equal")
            for name in ("clean_answer_text", "corrupted_answer_text"):
                check_str(getattr(self, name), name, empty=True)
            if not isinstance(self.positions, dict) or not isinstance(self.spans, dict):
                raise ThinklensError("positions and spans must be JSON objects")
            for name, p in self.positions.items():
                check_int(p, f"position {name}", 0, T)
            for name, span in self.spans.items():
                self.spans[name] = check_span(span, name, T)
            for name in ("prompt", "reasoning", "answer"):
                if name not in self.spans:
                    raise ThinklensError(f"missing span {name!r}")
            if not isinstance(self.tokens, list) or (self.tokens and len(self.tokens) != T):
                raise ThinklensError(f"tokens must be a list of the {T} token strings")
            if not isinstance(self.meta, dict):
                raise ThinklensError("meta must be a JSON object")
        except ThinklensError as err:
            raise ThinklensError(f"{what}: {err}") from None

    def check_vocab(self, vocab: int) -> None:
        """Refuse token ids the model cannot embed (``vocab``: its embedding rows), before any forward runs.

        >>> from thinklens.patching.pairs import toy_pairs, toy_tokenizer
        >>> pair = toy_pairs(1, 0, toy_tokenizer())[0][0]
        >>> pair.clean_ids[3] = 10_000_000
        >>> try:
        ...     pair.check_vocab(1000)
        ... except ThinklensError as err:
        ...     print(err)
        pair 'arithmetic-pair-test-00000': clean_ids[3] = 10000000 is outside the vocabulary (0..999)
        """
        from thinklens.validate import check_ids, check_int

        try:
            check_ids(self.clean_ids, "clean_ids", vocab=vocab)
            check_ids(self.corrupted_ids, "corrupted_ids", vocab=vocab)
            check_int(self.clean_answer, "clean_answer", 0, vocab)
            check_int(self.corrupted_answer, "corrupted_answer", 0, vocab)
        except ThinklensError as err:
            raise ThinklensError(f"pair {self.id!r}: {err}") from None

    def __len__(self) -> int:
        return len(self.clean_ids)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Pair:
        """A pair from its JSON record; a missing field, a value of the wrong type or out of range is a one-line
        ThinklensError naming the pair (a pair file's reader skips that record)."""
        from thinklens.validate import check_fields

        what = f"pair record {d.get('id')!r}" if isinstance(d, dict) else "pair record"
        check_fields(d, [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING], what)
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def text(self, side: str = "clean") -> list[int]:
        """The real (unpadded) token ids of one side: what the model sees once the pads are masked out.

        >>> from thinklens.patching.pairs import toy_pairs, toy_tokenizer
        >>> pair = toy_pairs(1, 0, toy_tokenizer())[0][0]
        >>> len(pair.text("clean")) == sum(pair.clean_mask)
        True
        """
        ids, mask = (self.clean_ids, self.clean_mask) if side == "clean" else (self.corrupted_ids, self.corrupted_mask)
        return [t for t, m in zip(ids, mask) if m]


@dataclass
class Side:
    """One response cut into the three texts of a patching sequence (before tokenization).

    ``answer_body``: char span ``[b0, b1)`` of the model's own answer text inside ``answer``: ``answer[:b0]`` is the
    think-close, ``answer[b1:]`` the ending; both must tokenize identically in the two sides, and pads go at
    ``b0``. ``(b0, b0)`` is an empty body (the answer dropped). ``None`` (the default): the whole answer is the
    ending, identical in the two sides. ``named_chars``/``named_answer_chars``: more named char spans in ``reasoning`` /
    ``answer`` (a named position is kept when both sides have it at the same index).

    >>> Side("q-a", "<think>\\n", "1+1=2\\nFinal answer is 2.\\n", "</think>\\n\\nThe answer is \\\\boxed{", "2",
    ...      6, (22, 23)).answer_body is None
    True
    """

    id: str
    prompt: str  # BOS ... think-open
    reasoning: str  # reasoning body + probe line
    answer: str  # think-close + answer body + answer ending (ends where the answer token is predicted)
    answer_text: str
    probe_start: int  # char offset of the probe line in `reasoning`
    answer_chars: tuple[int, int]  # char span of the answer inside `reasoning` (in the probe)
    named_chars: dict[str, tuple[int, int]] = field(default_factory=dict)  # more named spans in `reasoning`
    answer_body: tuple[int, int] | None = None  # char span of the kept answer text in `answer`
    named_answer_chars: dict[str, tuple[int, int]] = field(default_factory=dict)  # named spans in `answer`


def _tokenize(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def _tokens_covering(offsets: list[tuple[int, int]], a: int, b: int) -> list[int]:
    return [i for i, (s, e) in enumerate(offsets) if s < b and e > a]


def _split_answer(s: Side, ids: list[int], off: list[tuple[int, int]]) -> tuple[int, int]:
    """Token counts of the think-close head (before the body) and of the ending (after it)."""
    b0, b1 = s.answer_body if s.answer_body is not None else (0, 0)  # no body: all of it is the shared ending
    head = sum(1 for _, e in off if e <= b0)
    tail = sum(1 for a, e in off if a >= b1 and e > a)
    if s.answer_body is not None and (any(a < b0 < e or a < b1 < e for a, e in off) or head + tail > len(ids)):
        raise PairRejected(f"{s.id}: the answer text merges with the think-close or the ending into one token")
    return head, tail


def assemble_pair(pid: str, clean: Side, corrupted: Side, tokenizer: Any, *, pad_id: int | None = None,
                  first_token_answers: bool = False, meta: dict | None = None) -> Pair:
    """Tokenize both sides segment by segment, check the answers and the probe, and pad into aligned sequences.

    ``first_token_answers``: the answers may span several tokens and are compared by their first token (tiny-r1's
    numbers); otherwise each must be exactly one token, as in the paper.

    >>> from thinklens.patching.pairs import toy_tokenizer
    >>> def side(q, a, body):  # the model's own answer text `body` is kept before the ending
    ...     r = f"{q}={a}\\nFinal answer is {a}.\\n"
    ...     return Side(q, "<think>\\n", r, "</think>" + body + "The answer is \\\\boxed{", a, r.index("Final"),
    ...                 (r.rindex(a), r.rindex(a) + 1), answer_body=(8, 8 + len(body)))
    >>> pair = assemble_pair("p", side("3+4", "7", "\\n\\nSo 7.\\n\\n"), side("3+5", "8", "\\n\\n8.\\n\\n"),
    ...                      toy_tokenizer())
    >>> pair.positions, pair.spans["probe"], pair.spans["answer_body"]
    ({'answer_flip': 24, 'think_close': 27, 'final': 57}, [8, 27], [28, 37])
    >>> pair.corrupted_mask[27:32]  # "</think>", 3 pads for the shorter answer text, "\\n\\n8.\\n\\n"
    [1, 0, 0, 0, 1]
    """
    sides = []
    for s in (clean, corrupted):
        p_ids, _ = _tokenize(tokenizer, s.prompt)
        r_ids, r_off = _tokenize(tokenizer, s.reasoning)
        a_ids, a_off = _tokenize(tokenizer, s.answer)
        ans = _tokenize(tokenizer, s.answer_text)[0]
        if not ans:
            raise PairRejected(f"{s.id}: empty answer")
        if len(ans) != 1 and not first_token_answers:
            raise PairRejected(f"{s.id}: answer {s.answer_text!r} is {len(ans)} tokens, not one")
        probe = _tokens_covering(r_off, s.probe_start, len(s.reasoning))
        flip = _tokens_covering(r_off, *s.answer_chars)
        if not probe or not flip:
            raise PairRejected(f"{s.id}: probe line not found in the tokenized reasoning")
        sides.append((p_ids, r_ids, a_ids, ans[0], probe, flip, _split_answer(s, a_ids, a_off), a_off))
    (pc, rc, ac, tc, probe_c, flip_c, (hc, ec), _), (pb, rb, ab, tb, probe_b, flip_b, (hb, eb), _) = sides
    if tc == tb:
        raise PairRejected(f"answers {clean.answer_text!r} and {corrupted.answer_text!r} share their first token")
    # probe tokens must line up counted from the reasoning end, and differ only inside the answer
    if len(probe_c) != len(probe_b) or [len(rc) - i for i in flip_c] != [len(rb) - i for i in flip_b]:
        raise PairRejected("probe tokens do not line up (the answers tokenize differently inside the probe)")
    flip_set = {len(rc) - i for i in flip_c}
    for i, j in zip(probe_c, probe_b):
        if len(rc) - i not in flip_set and rc[i] != rb[j]:
            raise PairRejected("probe tokens differ outside the answer token")
    if ac[:hc] != ab[:hb] or ac[len(ac) - ec:] != ab[len(ab) - eb:]:
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
    a_c, a_b, am_c, am_b = pad(ac, ab, hc)
    n_p, n_r = len(p_c), len(r_c)
    clean_ids, corr_ids = p_c + r_c + a_c, p_b + r_b + a_b
    cmask, bmask = pm_c + rm_c + am_c, pm_b + rm_b + am_b
    T, close = len(clean_ids), n_p + n_r
    flip = close - (len(rc) - flip_c[0])
    positions = {"answer_flip": flip, "think_close": close, "final": T - 1}
    for name, chars in clean.named_chars.items():  # kept when both sides have it at the same place
        if name in corrupted.named_chars:
            tc_ = _tokens_covering(_tokenize(tokenizer, clean.reasoning)[1], *chars)
            tb_ = _tokens_covering(_tokenize(tokenizer, corrupted.reasoning)[1], *corrupted.named_chars[name])
            if tc_ and tb_ and len(rc) - tc_[0] == len(rb) - tb_[0]:
                positions[name] = close - (len(rc) - tc_[0])
    for name, chars in clean.named_answer_chars.items():  # counted from the end: the answer is padded at its start
        if name in corrupted.named_answer_chars:
            tc_ = _tokens_covering(sides[0][7], *chars)
            tb_ = _tokens_covering(sides[1][7], *corrupted.named_answer_chars[name])
            if tc_ and tb_ and len(ac) - tc_[0] == len(ab) - tb_[0] and tc_[0] >= hc:
                positions[name] = T - (len(ac) - tc_[0])
    spans = {"prompt": [0, n_p], "reasoning": [n_p, close], "answer": [close, T],
             "probe": [close - (len(rc) - probe_c[0]), close], "answer_flip": [flip, flip + len(flip_c)],
             "answer_body": [close + hc, T - ec], "ending": [T - ec, T]}
    tokens = [tokenizer.decode([t]) if m else "<pad>" for t, m in zip(clean_ids, cmask)]
    return Pair(id=pid, clean_id=clean.id, corrupted_id=corrupted.id, clean_ids=clean_ids, corrupted_ids=corr_ids,
                clean_mask=cmask, corrupted_mask=bmask, clean_answer=tc, corrupted_answer=tb,
                clean_answer_text=clean.answer_text, corrupted_answer_text=corrupted.answer_text,
                positions=positions, spans=spans, tokens=tokens, meta=dict(meta or {}))
