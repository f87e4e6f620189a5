"""Cut a trace's reasoning into steps: lines or sentences, with token and character spans and a category.

Why this shape: every step method (attention, suppression, truncation, resampling) needs the same steps as
absolute half-open *token* spans within ``trace.ids``, while humans read steps as text. Segmentation therefore
happens on characters (robust rules), and the result is then aligned to tokens so that

* the steps cover the reasoning's tokens exactly, without gap or overlap, in order;
* each step's text is ``trace.text[char_start:char_end]`` and the texts concatenate to the reasoning text;
* a token belongs to the step holding its first non-space character (a BPE token such as ``" Wait"`` opens the
  next sentence; ``".\\n\\n"`` closes the previous one).

Modes. ``lines``: one step per line (tiny-r1's steps are its lines). ``sentences``: lines, further split after
``.``/``?``/``!`` followed by space and a capital letter (Thought Anchors splits sentences likewise). Never split
inside LaTeX math (``$...$``, ``$$...$$``, ``\\(...\\)``, ``\\[...\\]``, ``\\begin{..}...\\end{..}``) or braces
(``\\frac{a}{b}``), after an abbreviation (``e.g.``), inside a number (``3.5``) or after a list marker (``1.``).
``auto`` picks ``lines`` when no line holds more than one sentence (line-structured reasoning such as tiny-r1's),
else ``sentences``. Fragments with fewer than ``min_chars`` non-space characters are merged into the next step, and
fragments without any letter or digit (``\\]``, ``---``) into the previous one.

>>> from thinklens.models import load_model
>>> from thinklens.toy import full_text, generate_problems
>>> from thinklens.traces import Trace
>>> model, tok, prof = load_model("tiny-r1")
>>> trace = Trace.from_text(full_text(generate_problems(1, seed=0)[0]), tok, prof)
>>> [(s.text, s.category) for s in segment_reasoning(trace)][-3:]
[('Wait, 26-11=15\\n', 'backtracking'), ('15*3=45\\n', 'computation'), ('Final answer is 45.\\n', 'final_answer')]
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from thinklens.errors import ThinklensError
from thinklens.steps.categories import classify_step
from thinklens.traces import Trace

MODES: tuple[str, ...] = ("auto", "lines", "sentences")
DEFAULT_MIN_CHARS = 3
# a period after one of these words ends no sentence (compared lower-case, without the period)
ABBREVIATIONS: frozenset[str] = frozenset({
    "e.g", "i.e", "etc", "vs", "cf", "approx", "resp", "fig", "figs", "eq", "eqs", "dr", "mr", "mrs", "ms", "prof",
    "jr", "sr", "vol", "pp", "thm", "lem", "prop", "al",
})  # not "no", "min", "max": in reasoning they end sentences ("Wait, no. Wait, ...")
_MATH = re.compile(
    r"\$\$.+?\$\$|\\\[.+?\\\]|\\begin\{(\w+\*?)\}.+?\\end\{\1\}|\\\((?:(?!\n\s*\n).)+?\\\)|"
    r"(?<![\\$])\$[^$\n]+?(?<!\\)\$",
    re.DOTALL)
_MATH_MAX_CHARS = 4000  # a longer "math region" is an unmatched delimiter, not math (inline math never crosses a
# blank line: models leave some "\(" unclosed)
_SENT_END = re.compile(r"[.!?]+[\"')\]*]*(?=\s)")
_LIST_MARKER = re.compile(r"^\s*(?:[-*+•]\s*)?\(?(?:\d{1,3}|[a-zA-Z]|[ivxIVX]{2,4})[.)]\s*$")


@dataclass(frozen=True)
class Step:
    """One reasoning step: token span ``[tok_start, tok_end)`` in ``trace.ids``, characters of ``trace.text``.

    >>> Step(0, 5, 9, 40, 44, "1+1=2", "computation").span
    (5, 9)
    """

    index: int
    tok_start: int
    tok_end: int
    char_start: int
    char_end: int
    text: str
    category: str

    @property
    def span(self) -> tuple[int, int]:
        return (self.tok_start, self.tok_end)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _protected(text: str) -> np.ndarray:
    """[len(text)] bool: characters inside LaTeX math or inside braces, where no step may end."""
    mask = np.zeros(len(text) + 1, dtype=bool)
    for m in _MATH.finditer(text):
        if m.end() - m.start() <= _MATH_MAX_CHARS:
            mask[m.start() + 1 : m.end() - 1] = True
    depth, esc = 0, False
    for i, c in enumerate(text):
        if esc:
            esc = False
            continue
        if c == "\\":
            esc = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth = max(0, depth - 1)
        elif c == "\n" and text[i + 1 : i + 2] == "\n":
            depth = 0  # a paragraph break ends any unbalanced brace
        if depth > 0:
            mask[i] = True
    return mask


def _line_cuts(text: str, prot: np.ndarray) -> list[int]:
    """Cut positions after each run of newlines (not inside display math)."""
    cuts = []
    for m in re.finditer(r"\n+", text):
        if not prot[m.start()] and m.end() < len(text):
            cuts.append(m.end())
    return cuts


def _sentence_cuts(text: str, prot: np.ndarray) -> list[int]:
    """Cut positions inside lines: after sentence-ending punctuation + spaces, before a capital letter."""
    cuts = []
    for m in _SENT_END.finditer(text):
        p = m.start()
        if prot[p]:
            continue
        ws = re.compile(r"[ \t]+").match(text, m.end())
        if ws is None:
            continue  # followed by a newline: the line cut handles it
        nxt = ws.end()
        rest = text[nxt : nxt + 3]
        if not rest or not (rest[0].isupper() or (rest[0] in "\"'*#(" and rest[1:2].isupper())):
            continue
        line_start = text.rfind("\n", 0, p) + 1
        before = text[line_start : m.end()]
        word = re.search(r"([\w.]+)[.!?]+[\"')\]*]*$", before)
        if text[p] == "." and word:
            w = word.group(1).lower().rstrip(".")
            if w in ABBREVIATIONS:
                continue
        if _LIST_MARKER.match(before):
            continue  # "1. Compute ..." is a list item, not a sentence "1."
        cuts.append(nxt)
    return cuts


def _pieces(text: str, cuts: list[int]) -> list[tuple[int, int]]:
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(text))), len(text)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _merge_small(text: str, pieces: list[tuple[int, int]], min_chars: int) -> list[tuple[int, int]]:
    """Merge fragments without letters/digits into the previous piece, short ones into the next."""
    out: list[list[int]] = []
    carry: int | None = None  # start of short fragments waiting for the next piece
    for a, b in pieces:
        body = text[a:b]
        core = "".join(body.split())
        alnum = any(ch.isalnum() for ch in core)
        if out and carry is None and not alnum:
            out[-1][1] = b
            continue
        if not alnum or len(core) < min_chars:
            carry = a if carry is None else carry
            continue
        out.append([a if carry is None else carry, b])
        carry = None
    if carry is not None:  # short fragments at the end join the last step
        if out:
            out[-1][1] = pieces[-1][1]
        else:
            out.append([carry, pieces[-1][1]])
    return [(a, b) for a, b in out]


def split_text(text: str, mode: str = "auto", min_chars: int = DEFAULT_MIN_CHARS) -> tuple[list[tuple[int, int]], str]:
    r"""Character pieces ``[(start, end)]`` covering ``text`` (leading/trailing blanks included), and the mode used.

    >>> text = "We have x = 3.5, e.g. here. Then y = \\frac{1}{2}. Done!\nNext line"
    >>> [text[a:b] for a, b in split_text(text)[0]]
    ['We have x = 3.5, e.g. here. ', 'Then y = \\frac{1}{2}. ', 'Done!\n', 'Next line']
    """
    if mode not in MODES:
        raise ThinklensError(f"unknown segmentation mode {mode!r}; choose from {', '.join(MODES)}")
    if not text.strip():
        return [], mode if mode != "auto" else "lines"
    prot = _protected(text)
    lines = _merge_small(text, _pieces(text, _line_cuts(text, prot)), min_chars)
    if mode == "lines":
        return lines, "lines"
    sents = _merge_small(text, _pieces(text, _line_cuts(text, prot) + _sentence_cuts(text, prot)), min_chars)
    if mode == "sentences":
        return sents, "sentences"
    return (sents, "sentences") if len(sents) > len(lines) else (lines, "lines")


def segment_reasoning(trace: Trace, mode: str = "auto", min_chars: int = DEFAULT_MIN_CHARS) -> list[Step]:
    """The steps of ``trace.reasoning`` (empty list when the reasoning is empty or blank). See the module doc."""
    return segment_with_mode(trace, mode, min_chars)[0]


def segment_with_mode(trace: Trace, mode: str = "auto", min_chars: int = DEFAULT_MIN_CHARS
                      ) -> tuple[list[Step], str]:
    """:func:`segment_reasoning` plus the mode actually used (``auto`` resolved).

    >>> from thinklens.toy import full_text, generate_problems
    >>> from thinklens.toy.tokenizer import build_tokenizer
    >>> steps, mode = segment_with_mode(Trace.from_text(full_text(generate_problems(1, seed=3)[0]), build_tokenizer()))
    >>> mode, steps[-1].text
    ('lines', 'Final answer is 61.\\n')
    """
    r = trace.reasoning
    if len(r) == 0:
        return [], mode if mode != "auto" else "lines"
    c0, c1 = trace.char_span(r)
    pieces, used = split_text(trace.text[c0:c1], mode, min_chars)
    if not pieces:
        return [], used
    starts = np.array([c0 + a for a, _ in pieces])  # [n_pieces] absolute char starts
    owner = np.empty(len(r), dtype=np.int64)  # [n_reasoning] piece index of each token
    prev_end = c0
    for k, t in enumerate(range(r.start, r.end)):
        a, b = trace.offsets[t]
        a = max(a, prev_end) if b > prev_end else a
        seg = trace.text[a:b]
        lead = len(seg) - len(seg.lstrip())
        anchor = a + lead if lead < len(seg) else a  # first non-space character (or the first one)
        owner[k] = max(0, int(np.searchsorted(starts, anchor, side="right")) - 1)
        prev_end = max(prev_end, b)
    owner = np.maximum.accumulate(owner)  # monotone: offsets of odd tokenizers never reorder steps
    steps: list[Step] = []
    bounds = np.flatnonzero(np.diff(owner)) + 1
    tok_starts = [0, *bounds.tolist()]
    tok_ends = [*bounds.tolist(), len(r)]
    char_starts = [c0] + [max(c0, min(c1, trace.offsets[r.start + t][0])) for t in tok_starts[1:]]
    char_starts = np.maximum.accumulate(char_starts).tolist()
    char_ends = [*char_starts[1:], c1]
    for i, (ta, tb, ca, cb) in enumerate(zip(tok_starts, tok_ends, char_starts, char_ends)):
        text = trace.text[ca:cb]
        steps.append(Step(i, r.start + ta, r.start + tb, int(ca), int(cb), text, classify_step(text)))
    return steps, used


def step_spans(steps: list[Step]) -> list[tuple[int, int]]:
    """The contract between step methods: absolute half-open token spans within ``trace.ids``.

    >>> step_spans([Step(0, 5, 9, 40, 44, "1+1=2", "computation")])
    [(5, 9)]
    """
    return [s.span for s in steps]


def check_spans(trace: Trace, spans: list[tuple[int, int]]) -> None:
    """Raise ThinklensError unless ``spans`` are non-empty, ordered, non-overlapping and inside the reasoning.

    >>> from thinklens.toy import full_text, generate_problems
    >>> from thinklens.toy.tokenizer import build_tokenizer
    >>> trace = Trace.from_text(full_text(generate_problems(1, seed=3)[0]), build_tokenizer())
    >>> check_spans(trace, step_spans(segment_reasoning(trace)))  # no error
    """
    r = trace.reasoning
    prev = r.start
    if not spans:
        raise ThinklensError("no steps")
    for i, (a, b) in enumerate(spans):
        if not (prev <= a < b <= r.end):
            raise ThinklensError(f"step {i}: span [{a}, {b}) is empty, overlaps the previous step or leaves the "
                                 f"reasoning [{r.start}, {r.end})")
        prev = b
