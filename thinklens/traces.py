"""The trace model: one tokenized sequence split into BOS | prompt | think-open | reasoning | think-close |
answer | EOS.

Every later stage indexes tokens through a :class:`Trace`, so its convention is the paper's and is tested on real
R1-Distill traces: token positions are positions in ``tokenizer(text, add_special_tokens=False)`` (texts already
begin with BOS), ``think_start`` is the position of the ``<think>`` token and ``think_end`` that of the ``</think>``
token that ends the reasoning. Spans are half-open token ranges; ``offsets`` map every token back to characters of
``text``, so sentences, cue words and the answer-carrying token can be found through the text.

Delimiters are found as token sequences (the profile's strings, tokenized alone), not by searching decoded text. If a
tokenizer merges a delimiter with its neighbours so that no token sequence matches, the delimiter is located in the
original text and mapped to the tokens that cover it (flag ``delimiter_by_offsets``).

Which ``</think>`` ends the reasoning: the first one after the think-open. Generation switches to answering at the
first close (vLLM's DeepSeek-R1 reasoning parser splits there too); later ones are text written inside the answer.
Their total is kept in ``n_think_close``.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from thinklens.errors import TraceError
from thinklens.jsonl import read_jsonl, record_id  # noqa: F401 - record_id is part of this module's API
from thinklens.profiles import Profile, get_profile

SEGMENTS = ("bos", "prompt", "think_open", "reasoning", "think_close", "answer", "eos")

# Work per record is bounded by characters, checked BEFORE tokenizing: a fast tokenizer with offsets costs ~180 bytes
# of memory per character (a 50 MB record needed ~20 GB). Real R1-Distill traces have 1.8-5.2 characters per token
# (median 2.8, 400 MATH-500 traces); 16 is a ceiling on the *average* that only texts made of long whitespace or
# punctuation runs exceed. ``--max-tokens N`` therefore implies at most ``N * MAX_CHARS_PER_TOKEN`` characters.
MAX_CHARS_PER_TOKEN = 16
# Without a token limit: a 32k-token generation (R1's recommended maximum) at the ceiling, 524,288 characters, ~6x a
# 16k-token trace at the densest measured rate; tokenizing it costs ~100 MB.
DEFAULT_MAX_CHARS = 32_768 * MAX_CHARS_PER_TOKEN


def char_bound(max_tokens: int | None) -> int:
    """The character bound of a record for a token limit (``None``: :data:`DEFAULT_MAX_CHARS`).

    >>> char_bound(4096), char_bound(None)
    (65536, 524288)
    """
    return DEFAULT_MAX_CHARS if max_tokens is None else int(max_tokens) * MAX_CHARS_PER_TOKEN


def _check_chars(n_chars: int, max_chars: int | None) -> None:
    if max_chars is not None and n_chars > max_chars:
        raise TraceError(f"too long: {n_chars:,} characters > the record bound of {max_chars:,} (not tokenized)")


@dataclass(frozen=True)
class Span:
    """Half-open token range ``[start, end)``.

    >>> import thinklens as tl
    >>> s = tl.Span(2, 5)
    >>> len(s), list(s), 4 in s, 5 in s, s.to_list()
    (3, [2, 3, 4], True, False, [2, 5])
    """

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ValueError(f"invalid span [{self.start}, {self.end})")

    def __len__(self) -> int:
        return self.end - self.start

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.end))

    def __contains__(self, pos: object) -> bool:
        return isinstance(pos, int) and self.start <= pos < self.end

    def to_list(self) -> list[int]:
        return [self.start, self.end]


@dataclass
class Trace:
    """One tokenized sequence and its segments (see the module docstring for the conventions).

    >>> import thinklens as tl
    >>> from thinklens.toy import full_text, generate_problems
    >>> trace = tl.Trace.from_text(full_text(generate_problems(1, seed=2)[0]), tl.load_tokenizer("tiny-r1"))
    >>> len(trace), trace.think_start, trace.think_end, trace.finished
    (100, 18, 71, True)
    >>> trace.span_text(trace.reasoning).splitlines()
    ['', '7*4=28', '28-12=23', 'Wait, 28-12=16', 'Final answer is 16.']
    >>> trace.span_text(trace.answer)
    '\\n\\nThe answer is \\\\boxed{16}.'
    """

    ids: list[int]
    offsets: list[tuple[int, int]]  # [n_tokens] char (start, end) of each token in `text`
    text: str
    prompt: Span
    reasoning: Span
    bos: Span | None = None
    think_open: Span | None = None
    think_close: Span | None = None
    answer: Span | None = None  # None when the reasoning never closed
    eos: Span | None = None
    n_think_close: int = 0
    flags: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    # -- convenience ------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    @property
    def think_start(self) -> int | None:
        return self.think_open.start if self.think_open else None

    @property
    def think_end(self) -> int | None:
        return self.think_close.start if self.think_close else None

    @property
    def finished(self) -> bool:
        """The reasoning was closed (there is an answer segment)."""
        return self.think_close is not None

    def segments(self) -> dict[str, Span | None]:
        return {name: getattr(self, name) for name in SEGMENTS}

    def segment_labels(self) -> np.ndarray:
        """[n_tokens] int8 index into :data:`SEGMENTS` for every token (-1 if uncovered)."""
        labels = np.full(len(self.ids), -1, dtype=np.int8)
        for k, name in enumerate(SEGMENTS):
            span = getattr(self, name)
            if span is not None:
                labels[span.start : span.end] = k
        return labels

    def char_span(self, span: Span) -> tuple[int, int]:
        """Character range of a token span (empty spans map to an empty range at their position)."""
        if len(span) == 0:
            c = self.offsets[span.start][0] if span.start < len(self.offsets) else len(self.text)
            return c, c
        return self.offsets[span.start][0], self.offsets[span.end - 1][1]

    def span_text(self, span: Span | None) -> str:
        if span is None:
            return ""
        a, b = self.char_span(span)
        return self.text[a:b]

    def tokens_in_chars(self, start: int, end: int) -> Span:
        """The smallest token span covering characters ``[start, end)``."""
        toks = [i for i, (a, b) in enumerate(self.offsets) if a < end and b > start]
        if not toks:
            raise TraceError(f"no token covers characters [{start}, {end})")
        return Span(toks[0], toks[-1] + 1)

    def token_strings(self) -> list[str]:
        """Each token's text, non-overlapping so that the pieces concatenate to ``text``. Byte-level BPE can split a
        multi-byte character (e.g. "÷", "✅") over two tokens whose offsets both cover it: the character goes to the
        first of them and the later piece is empty."""
        pieces, prev = [], 0
        for a, b in self.offsets:
            a = max(a, prev)
            pieces.append(self.text[a:b] if b > a else "")
            prev = max(prev, b)
        return pieces

    def summary(self) -> dict[str, Any]:
        """The per-record fields of ``thinklens traces inspect``."""
        return {
            "n_tokens": len(self.ids),
            "think_start": self.think_start,
            "think_end": self.think_end,
            "n_reasoning_tokens": len(self.reasoning),
            "n_answer_tokens": len(self.answer) if self.answer is not None else None,
            "n_think_close": self.n_think_close,
            "finished": self.finished,
            "flags": list(self.flags),
        }

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"ids": list(self.ids), "offsets": [list(o) for o in self.offsets], "text": self.text}
        for name in SEGMENTS:
            span = getattr(self, name)
            d[name] = span.to_list() if span is not None else None
        d.update(n_think_close=self.n_think_close, flags=list(self.flags), meta=self.meta)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trace:
        spans = {name: (Span(*d[name]) if d.get(name) is not None else None) for name in SEGMENTS}
        return cls(
            ids=list(d["ids"]), offsets=[tuple(o) for o in d["offsets"]], text=d["text"],
            n_think_close=d.get("n_think_close", 0), flags=tuple(d.get("flags", ())), meta=d.get("meta", {}),
            **spans,
        )

    # -- constructors -----------------------------------------------------------------------------------------
    @classmethod
    def from_text(
        cls, text: str, tokenizer: Any, profile: Profile | None = None, *, prompt_chars: int | None = None,
        max_chars: int | None = DEFAULT_MAX_CHARS,
    ) -> Trace:
        """Segment a full sequence (prompt + completion). ``prompt_chars``, when known, is where the completion
        starts; it locates the reasoning when the text has no think-open delimiter. A text longer than
        ``max_chars`` is refused with a :class:`TraceError` before tokenizing (``None``: no bound)."""
        if not isinstance(text, str) or not text.strip():
            raise TraceError("empty text")
        _check_chars(len(text), max_chars)
        profile = profile or _profile_for(tokenizer)
        if profile.add_bos and profile.bos_token and not text.startswith(profile.bos_token):
            text = profile.bos_token + text
            prompt_chars = None if prompt_chars is None else prompt_chars + len(profile.bos_token)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
        return _segment(ids, offsets, text, tokenizer, profile, prompt_chars, flags=[])

    @classmethod
    def from_prompt_completion(
        cls, prompt: str, completion: str, tokenizer: Any, profile: Profile | None = None, *,
        max_chars: int | None = DEFAULT_MAX_CHARS,
    ) -> Trace:
        """Segment ``prompt + completion`` (tokenized as one text, as the model saw it)."""
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise TraceError("prompt and completion must be strings")
        _check_chars(len(prompt) + len(completion), max_chars)
        if not completion.strip():
            raise TraceError("empty completion")
        return cls.from_text(prompt + completion, tokenizer, profile, prompt_chars=len(prompt), max_chars=max_chars)

    @classmethod
    def from_ids(cls, ids: Sequence[int], tokenizer: Any, profile: Profile | None = None) -> Trace:
        """Segment a token sequence. Offsets come from re-encoding the decoded text when that reproduces the ids,
        else from decoding token by token (flag ``approximate_offsets``)."""
        profile = profile or _profile_for(tokenizer)
        ids = [int(i) for i in ids]
        if not ids:
            raise TraceError("empty token sequence")
        text = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        flags: list[str] = []
        if list(enc["input_ids"]) == ids:
            offsets = [tuple(o) for o in enc["offset_mapping"]]
        else:
            offsets, pos = [], 0
            for i in ids:
                piece = tokenizer.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False)
                end = min(pos + len(piece), len(text))
                offsets.append((pos, end))
                pos = end
            flags.append("approximate_offsets")
        return _segment(ids, offsets, text, tokenizer, profile, None, flags=flags)

    @classmethod
    def from_record(
        cls, record: dict[str, Any], tokenizer: Any, profile: Profile | None = None, text_field: str | None = None,
        *, max_chars: int | None = DEFAULT_MAX_CHARS,
    ) -> Trace:
        """Build from a trace-file record: ``text_field`` if given, else ``text``, else ``prompt`` + ``completion``.

        A record over ``max_chars`` characters raises :class:`TraceError` before tokenizing (see
        :func:`char_bound`), so one huge record costs a reason line, not the machine's memory."""
        if text_field is not None:
            if text_field not in record:
                raise TraceError(f"record has no field {text_field!r}")
            value = record[text_field]
            if not isinstance(value, str):
                raise TraceError(f"field {text_field!r} is {type(value).__name__}, not a string")
            return cls.from_text(value, tokenizer, profile, max_chars=max_chars)
        if "text" in record:
            return cls.from_record(record, tokenizer, profile, "text", max_chars=max_chars)
        if "prompt" in record and "completion" in record:
            return cls.from_prompt_completion(record["prompt"], record["completion"], tokenizer, profile,
                                              max_chars=max_chars)
        raise TraceError("record has neither 'text' nor 'prompt' + 'completion'")


# -- segmentation ---------------------------------------------------------------------------------------------
def _profile_for(tokenizer: Any) -> Profile:
    return get_profile(getattr(tokenizer, "name_or_path", None))


def _token_id(tokenizer: Any, token: str | None) -> int | None:
    if not token:
        return None
    tid = tokenizer.convert_tokens_to_ids(token)
    return tid if isinstance(tid, int) and tid != tokenizer.unk_token_id else None


def _find_all(ids: list[int], pattern: list[int], start: int = 0) -> list[int]:
    n, m = len(ids), len(pattern)
    if m == 0:
        return []
    first = pattern[0]
    return [i for i in range(start, n - m + 1) if ids[i] == first and ids[i : i + m] == pattern]


def _find_delimiter(
    ids: list[int], offsets: list[tuple[int, int]], text: str, tokenizer: Any, delim: str, start_tok: int, flags: list
) -> list[Span]:
    """All token spans of ``delim`` at or after token ``start_tok``."""
    pattern = list(tokenizer(delim, add_special_tokens=False)["input_ids"])
    hits = [Span(i, i + len(pattern)) for i in _find_all(ids, pattern, start_tok)]
    # fallback, per occurrence: where the tokenizer merged the delimiter with a neighbour (a multi-token "<think>"
    # after "\n" in an instruct model's vocabulary), locate it in the original text and take the covering tokens
    char0 = offsets[start_tok][0] if start_tok < len(offsets) else len(text)
    found = {offsets[h.start][0] for h in hits}
    merged, pos = [], text.find(delim, char0)
    while pos != -1:
        if pos not in found:
            toks = [i for i, (a, b) in enumerate(offsets) if a < pos + len(delim) and b > pos]
            if toks and toks[0] >= start_tok:
                merged.append(Span(toks[0], toks[-1] + 1))
        pos = text.find(delim, pos + len(delim))
    if merged and "delimiter_by_offsets" not in flags:
        flags.append("delimiter_by_offsets")
    return sorted(hits + merged, key=lambda s: s.start)


def _segment(
    ids: list[int],
    offsets: list[tuple[int, int]],
    text: str,
    tokenizer: Any,
    profile: Profile,
    prompt_chars: int | None,
    flags: list[str],
) -> Trace:
    n = len(ids)
    if n == 0:
        raise TraceError("text tokenizes to nothing")
    bos_id, eos_id = _token_id(tokenizer, profile.bos_token), _token_id(tokenizer, profile.eos_token)
    if eos_id is None:
        eos_id = tokenizer.eos_token_id
    bos = Span(0, 1) if bos_id is not None and ids[0] == bos_id else None
    body_start = bos.end if bos else 0
    if bos is not None and n > 1 and ids[1] == bos_id:
        flags.append("double_bos")
    eos = Span(n - 1, n) if eos_id is not None and n > body_start and ids[-1] == eos_id else None
    body_end = eos.start if eos else n

    opens = _find_delimiter(ids, offsets, text, tokenizer, profile.think_open, body_start, flags)
    think_open = _opening(opens, offsets, text, profile, prompt_chars)
    if think_open is not None:
        prompt = Span(body_start, think_open.start)
        reasoning_start = think_open.end
    else:
        closes_any = _find_delimiter(ids, offsets, text, tokenizer, profile.think_close, body_start, flags)
        if prompt_chars is None:
            if closes_any:
                raise TraceError(
                    f"found {profile.think_close!r} but no {profile.think_open!r}: the reasoning start is unknown; "
                    "pass prompt and completion separately"
                )
            raise TraceError(f"no reasoning delimiters ({profile.think_open!r} / {profile.think_close!r}) found")
        if not closes_any:
            raise TraceError(f"no reasoning delimiters ({profile.think_open!r} / {profile.think_close!r}) found")
        first_completion = next((i for i, (a, _) in enumerate(offsets) if a >= prompt_chars), n)
        prompt = Span(body_start, max(body_start, first_completion))
        reasoning_start = prompt.end
        flags.append("no_think_open")

    closes = _find_delimiter(ids, offsets, text, tokenizer, profile.think_close, reasoning_start, flags)
    if closes:
        think_close = closes[0]
        reasoning = Span(reasoning_start, think_close.start)
        answer = Span(think_close.end, max(think_close.end, body_end))
        if len(closes) > 1:
            flags.append("multiple_think_close")
    else:
        think_close, answer = None, None
        reasoning = Span(reasoning_start, max(reasoning_start, body_end))
        flags.append("unfinished")
    if len(reasoning) == 0 or not text[slice(*_chars(offsets, reasoning, text))].strip():
        flags.append("empty_reasoning")
    return Trace(
        ids=ids, offsets=offsets, text=text, prompt=prompt, reasoning=reasoning, bos=bos, think_open=think_open,
        think_close=think_close, answer=answer, eos=eos, n_think_close=len(closes), flags=tuple(flags),
    )


def _opening(opens: list[Span], offsets: list[tuple[int, int]], text: str, profile: Profile,
             prompt_chars: int | None) -> Span | None:
    """The think-open that starts the reasoning. Without a known prompt end: the first. With one (``prompt_chars``):
    the last think-open of the prompt that the prompt does not close again (a prompt may *mention* the delimiters,
    e.g. a prompted-thinking instruction "write your reasoning after <think>, close it with </think>", before the
    prefilled one), else the first in the completion (the model opened it itself)."""
    if not opens or prompt_chars is None:
        return opens[0] if opens else None
    for span in reversed(opens):
        start, end = offsets[span.start][0], offsets[span.end - 1][1]
        if start < prompt_chars and profile.think_close not in text[end:prompt_chars]:
            return span
    return next((s for s in opens if offsets[s.start][0] >= prompt_chars), None)


def _chars(offsets: list[tuple[int, int]], span: Span, text: str) -> tuple[int, int]:
    if len(span) == 0:
        return 0, 0
    return offsets[span.start][0], offsets[span.end - 1][1]


# -- files ----------------------------------------------------------------------------------------------------
def inspect_traces(
    path: str | Path, tokenizer: Any, profile: Profile | None = None, text_field: str | None = None, *,
    max_chars: int | None = DEFAULT_MAX_CHARS,
) -> Iterator[dict[str, Any]]:
    """Segment every record of a trace file; yields one dict per line, with ``error`` (and ``line``) for bad ones.

    Records are keyed by ``id`` (falling back to ``unique_id``, as in MATH-500 files). Streams the file; a record
    over ``max_chars`` characters is reported, not tokenized.

    >>> import json, os, tempfile, thinklens as tl
    >>> from thinklens.toy import full_text, generate_problems
    >>> path = os.path.join(tempfile.mkdtemp(), "traces.jsonl")
    >>> with open(path, "w") as f:
    ...     _ = f.write(json.dumps({"id": "a", "text": full_text(generate_problems(1, seed=2)[0])}) + "\\n")
    ...     _ = f.write(json.dumps({"id": "b", "text": "no delimiters"}) + "\\n{not json\\n")
    >>> rows = list(tl.inspect_traces(path, tl.load_tokenizer("tiny-r1")))
    >>> rows[0]["id"], rows[0]["think_end"], rows[0]["n_reasoning_tokens"], rows[0]["finished"]
    ('a', 71, 52, True)
    >>> for row in rows[1:]:  # one row per bad line too, with its reason
    ...     print(row["id"], row["line"], row["error"])
    b 2 no reasoning delimiters ('<think>' / '</think>') found
    None 3 invalid JSON: Expecting property name enclosed in double quotes at column 2
    """
    for item in read_jsonl(path):
        if item.error is not None:
            yield {"id": None, "line": item.lineno, "error": item.error}
            continue
        rid = record_id(item.record, item.lineno)
        try:
            trace = Trace.from_record(item.record, tokenizer, profile, text_field, max_chars=max_chars)
        except TraceError as err:
            yield {"id": rid, "line": item.lineno, "error": str(err)}
            continue
        yield {"id": rid, **trace.summary()}


def dumps_summary(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False)
