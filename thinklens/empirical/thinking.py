"""Reasoning on any model: prompted thinking, the three without-reasoning modes, budget forcing, and the advice given
when most traces cannot be used.

Why a module of its own: what turns "a model" into "a model that reasons in a delimited block" is the same for every
engine and every stage (collect, the contrastive pairs' responses), and it is a few decisions that must be made once:

* **prompted thinking** (``--thinking prompted``): an instruct model without native thinking gets the profile's
  ``thinking_instruction`` as a system message and a prefilled think-open, written as text in the model's own
  tokenization (``<think>`` is then several tokens; :class:`thinklens.traces.Trace` finds delimiters as token
  sequences, with a character-offset fallback);
* **without-reasoning modes** (``--without-mode``): ``forced`` appends the paper's finished thinking
  (``Okay, I think I have finished thinking.\\n</think>``), ``empty`` an empty think block, ``template-off`` lets the
  chat template close the block itself (Qwen3's ``enable_thinking=False``; the cleanest control: same weights, the
  model's own switch);
* **budget forcing** (``--on-unfinished force-close``, Muennighoff et al. 2025, "s1: Simple test-time scaling"): a
  trace whose reasoning never closed (the budget ran out, or the model stopped inside it) gets the think-close and
  the profile's ``answer_prefix`` appended, and the model answers within ``--answer-tokens``.

>>> from thinklens.profiles import get_profile
>>> without_text(get_profile("tiny-r1"), "empty")
'\\n</think>'
"""
from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from thinklens.empirical.backends import Generation
from thinklens.errors import ThinklensError
from thinklens.profiles import Profile

MIN_USABLE = 0.5  # evaluate stops with advice when fewer than this share of problems have a usable pair


# --------------------------------------------------------------------------------------------------------- prompts
def chat_messages(question: str, profile: Profile, thinking: str = "native") -> list[dict[str, str]]:
    """The chat turns of a problem: prompted thinking adds the profile's instruction as a system message.

    >>> from thinklens.profiles import get_profile
    >>> [m["role"] for m in chat_messages("1+1?", get_profile("tiny-r1"), "prompted")]
    ['system', 'user']
    """
    user = [{"role": "user", "content": question}]
    if thinking != "prompted":
        return user
    return [{"role": "system", "content": instruction(profile)}] + user


def instruction(profile: Profile) -> str:
    """The prompted-thinking instruction with the family's delimiters filled in."""
    return profile.thinking_instruction.replace("{think_open}", profile.think_open).replace(
        "{think_close}", profile.think_close)


def render_chat(tokenizer: Any, messages: list[dict[str, str]], **template_kwargs: Any) -> str:
    """The chat template's generation prompt; a template that refuses a system turn gets the instruction at the
    start of the user turn instead (Gemma-style templates)."""
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **template_kwargs)
    except Exception as err:  # noqa: BLE001 - jinja2 raises TemplateError subclasses and plain exceptions
        if messages[0]["role"] != "system":
            raise ThinklensError(f"the chat template failed: {err}") from None
        merged = [{"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}]
        return tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True, **template_kwargs)


def with_bos(prompt: str, profile: Profile) -> str:
    """Prepend the family's BOS when it uses one and the text lacks it (never a second one)."""
    if profile.add_bos and profile.bos_token and not prompt.startswith(profile.bos_token):
        return profile.bos_token + prompt
    return prompt


def without_text(profile: Profile, mode: str = "forced") -> str:
    """What the without-reasoning run appends to a prompt ending in think-open + ``\\n`` (``forced``, ``empty``)."""
    if mode == "empty":
        return f"\n{profile.think_close}"
    if mode != "forced":
        raise ThinklensError(f"without_text: mode {mode!r} is not text appended to the prompt")
    body = profile.no_reasoning_text
    return f"{body}\n{profile.think_close}" if body else f"\n{profile.think_close}"


def template_off(tokenizer: Any, messages: list[dict[str, str]], profile: Profile) -> tuple[str, str]:
    """``(prompt, forced)`` of the template's own no-thinking prompt (``enable_thinking=False``): when it extends the
    thinking prompt (Qwen3 appends ``<think>\\n\\n</think>\\n\\n``) the prompt is the thinking prompt and ``forced``
    the rest; otherwise the prompt runs up to its think-open (+ ``\\n``). Raises when the template has no such switch
    or does not write a closed think block."""
    off = with_bos(render_chat(tokenizer, messages, enable_thinking=False), profile)
    on = with_bos(render_chat(tokenizer, messages), profile)
    if off == on:
        raise ThinklensError("--without-mode template-off: this chat template ignores enable_thinking=False; use "
                             "--without-mode forced or empty")
    k = off.rfind(profile.think_open)
    if k == -1 or profile.think_close not in off[k:]:
        raise ThinklensError(f"--without-mode template-off: the chat template's no-thinking prompt writes no closed "
                             f"{profile.think_open}...{profile.think_close} block; use --without-mode forced or empty")
    if off.startswith(on) and k >= len(on):
        return on, off[len(on):]
    cut = k + len(profile.think_open)
    cut += 1 if off[cut:].startswith("\n") else 0
    return off[:cut], off[cut:]


def check_server_settings(settings: Any) -> None:
    """The server loop sends with/forced/empty requests (native or prompted thinking): refuse the local-only modes
    (the chat template's own switch, budget forcing) in one line."""
    local = [f for f, v in ((f"--without-mode {settings.without_mode}", settings.without_mode == "template-off"),
                            ("--on-unfinished force-close", settings.on_unfinished == "force-close")) if v]
    if local:
        raise ThinklensError(f"{', '.join(local)}: not available with --backend openai; generate locally "
                             "(--backend transformers or vllm)")


# -------------------------------------------------------------------------------------------------- budget forcing
def needs_close(forced: str, gen: Generation, profile: Profile) -> bool:
    """The reasoning never closed: the budget ran out inside it, or the model stopped (EOS) inside it."""
    return profile.think_close not in forced + gen.text


def needs_answer(forced: str, gen: Generation, profile: Profile) -> bool:
    """The reasoning closed but nothing followed: instruct models asked to think often write their answer inside the
    reasoning and end the turn at the close (Qwen2.5-Coder-1.5B did in 11 of 100 arithmetic traces, and in every
    without-reasoning one), which leaves nothing to grade or to attend from."""
    text = forced + gen.text
    k = text.rfind(profile.think_close)
    return k != -1 and not text[k + len(profile.think_close):].strip()


def close_text(reasoning: str, profile: Profile) -> str:
    """What budget forcing appends to an unclosed reasoning: think-close on its own line + the answer prefix.

    >>> from thinklens.profiles import get_profile
    >>> close_text("7+5=12", get_profile("tiny-r1"))
    '\\n</think>\\n\\nThe answer is \\\\boxed{'
    """
    return ("" if reasoning.endswith("\n") else "\n") + profile.think_close + profile.answer_prefix


def _answer_prefix(text: str, profile: Profile) -> str:
    """The answer prefix after a text that ends in the close (and maybe whitespace): no doubled blank lines."""
    tail = text[len(text.rstrip()):]
    prefix = profile.answer_prefix
    return prefix[len(tail):] if tail and prefix.startswith(tail) else prefix


def answer_complete(answer: str, stopped_at_eos: bool, profile: Profile) -> bool:
    """A forced answer is complete when it reached EOS or, with an answer prefix that opens a brace (``\\boxed{``),
    when that brace is closed (small models often go on talking after the box)."""
    if stopped_at_eos:
        return True
    if not profile.answer_prefix.rstrip().endswith("{"):
        return False
    depth = 1
    for ch in answer:
        depth += (ch == "{") - (ch == "}")
        if depth == 0:
            return True
    return False


def force_close(backend: Any, texts: list[str], forced: list[str], gens: list[Generation], settings: Any,
                tokenizer: Any, profile: Profile, seed: int) -> list[Generation]:
    """Budget forcing for one batch: every generation whose reasoning never closed is continued from
    ``text + reasoning + close_text`` (re-tokenized as one text, as the later stages will see it) for
    ``settings.answer_tokens`` tokens; one whose reasoning closed with no answer after it is continued from
    ``text + reasoning + answer prefix`` the same way (reason ``no_answer``). The returned generation holds
    reasoning + close + answer and ``meta["forced_close"]`` (why, and whether the answer completed). Others are
    returned unchanged."""
    todo = [i for i, g in enumerate(gens) if needs_close(forced[i], g, profile) or needs_answer(forced[i], g, profile)]
    if not todo:
        return gens
    closes = [close_text(gens[i].text, profile) if needs_close(forced[i], gens[i], profile)
              else _answer_prefix(forced[i] + gens[i].text, profile) for i in todo]
    prompts = [list(tokenizer(texts[i] + forced[i] + gens[i].text + c, add_special_tokens=False)["input_ids"])
               for i, c in zip(todo, closes)]
    answers = backend.generate(prompts, replace(settings, max_new_tokens=settings.answer_tokens), seed)
    out = list(gens)
    for i, c, ans in zip(todo, closes, answers):
        g = gens[i]
        close_ids = list(tokenizer(c, add_special_tokens=False)["input_ids"])
        reason = "no_answer" if profile.think_close not in c else "eos" if g.stopped_at_eos else "budget"
        info = {"reason": reason, "n_reasoning_tokens": len(g.token_ids),
                "answer_complete": answer_complete(ans.text, ans.stopped_at_eos, profile)}
        out[i] = Generation(g.token_ids + close_ids + ans.token_ids, g.text + c + ans.text, ans.stopped_at_eos,
                            {**g.meta, "forced_close": info})
    return out


# ---------------------------------------------------------------------------------------------------------- advice
def _why_unusable(r: dict[str, Any]) -> str | None:
    if r.get("finished") is False:
        if not r.get("reasoning_closed"):
            return "eos_in_reasoning" if r.get("stopped_at_eos") else "budget_in_reasoning"
        return "answer_cut" if r.get("reasoning") == "with" else "budget_in_answer"
    if r.get("error"):
        return "error"
    if "is_correct" in r and r.get("is_correct") is None:
        return "ungraded"
    return None


def usability(records: list[dict[str, Any]]) -> Counter:
    """Why the traces of one run (with or without) cannot be used, counted (``usable`` for the others)."""
    return Counter(_why_unusable(r) or "usable" for r in records)


def advice(with_records: list[dict[str, Any]], without_records: list[dict[str, Any]]) -> str:
    """What to change so that most problems get a usable with/without pair: which option, which budget."""
    gen = next((r.get("generation") for r in with_records + without_records if isinstance(r.get("generation"), dict)),
               {}) or {}
    budget, thinking = gen.get("max_new_tokens"), gen.get("thinking") or "native"
    forcing = gen.get("on_unfinished") == "force-close"
    w, wo = usability(with_records), usability(without_records)
    n = max(len(with_records), 1)
    out = []
    if w["eos_in_reasoning"] > n / 4:
        if thinking == "native":
            out.append(f"{w['eos_in_reasoning']} of {len(with_records)} with-reasoning traces stopped without ever "
                       "closing the reasoning: the model does not think in <think> blocks natively; use --thinking "
                       "prompted --on-unfinished force-close (an instruct model asked to think, its answer forced)")
        elif not forcing:
            out.append(f"{w['eos_in_reasoning']} of {len(with_records)} with-reasoning traces stopped without "
                       "closing the reasoning: use --on-unfinished force-close (the close and an answer prefix are "
                       "appended and the model answers)")
    if w["budget_in_reasoning"] and not forcing:
        more = f" (e.g. --max-new-tokens {2 * budget})" if isinstance(budget, int) else ""
        out.append(f"{w['budget_in_reasoning']} of {len(with_records)} with-reasoning traces ran out of the budget "
                   f"({budget} tokens) inside the reasoning: raise it{more} or use --on-unfinished force-close "
                   "(budget forcing: close the reasoning at the budget and let the model answer)")
    if w["answer_cut"]:
        out.append(f"{w['answer_cut']} with-reasoning answers did not finish: raise --answer-tokens (now "
                   f"{gen.get('answer_tokens')}) or --max-new-tokens")
    if wo["budget_in_answer"] + wo["answer_cut"]:
        k = wo["budget_in_answer"] + wo["answer_cut"]
        out.append(f"{k} of {len(without_records)} without-reasoning answers ran past the budget ({budget} tokens): "
                   "raise --max-new-tokens")
    bad = w["ungraded"] + wo["ungraded"] + w["error"] + wo["error"]
    if bad:
        out.append(f"{bad} traces could not be graded (no extractable answer, no gold answer or an error record): "
                   "see their 'error' field")
    return "; ".join(out) or "see the dropped counts"
