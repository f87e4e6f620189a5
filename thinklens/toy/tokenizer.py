"""Character-level HF fast tokenizer for ``tiny-r1`` with DeepSeek-R1's special tokens.

Why character level: every digit is its own token, so "the token of N's first digit" is well defined and a
contrastive pair whose texts have equal length aligns token for token. The R1 special tokens (BOS/EOS, User,
Assistant, ``<think>``, ``</think>``) are single added tokens, as in the real R1-Distill tokenizer, so code written
for tiny-r1 runs unchanged on the real models.
"""
from __future__ import annotations

import string

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from thinklens.toy.tasks import ASSISTANT, BOS, EOS, THINK_END, THINK_START, USER

UNK = "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (BOS, EOS, USER, ASSISTANT, THINK_START, THINK_END, UNK)
CHARS: tuple[str, ...] = ("\n", *(c for c in string.printable if c.isprintable()))  # "\n" + printable ASCII

# DeepSeek-R1-Distill style: system text right after BOS, user/assistant turns, and a generation prompt that opens
# the reasoning with "<think>\n". Assistant turns drop their reasoning, as R1's template does.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{{ message['content'] }}"
    "{%- elif message['role'] == 'user' %}{{ '<｜User｜>' + message['content'] }}"
    "{%- elif message['role'] == 'assistant' %}{% set content = message['content'] %}"
    "{%- if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{ '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<｜Assistant｜><think>\\n' }}{% endif %}"
)


def vocab() -> dict[str, int]:
    """Token -> id: the special tokens first (BOS=0, EOS=1), then "\\n" and the 95 printable ASCII characters."""
    return {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *CHARS))}


def build_backend() -> Tokenizer:
    """The raw ``tokenizers`` object: each character is one pre-token, looked up in a word-level vocabulary."""
    tok = Tokenizer(models.WordLevel(vocab=vocab(), unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (BOS, EOS, USER, ASSISTANT, UNK)])
    # as in the real R1 tokenizer, <think>/</think> are added but not special (they survive skip_special_tokens)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in (THINK_START, THINK_END)])
    # like R1-Distill: tokenizer(text) (add_special_tokens=True) prepends BOS; add_special_tokens=False adds nothing
    bos_id = vocab()[BOS]
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                                       special_tokens=[(BOS, bos_id)])
    return tok


def build_tokenizer():
    """A ``PreTrainedTokenizerFast`` with BOS/EOS/PAD (PAD = EOS, as in R1-Distill) and the R1 chat template."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=build_backend(),
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
        model_max_length=1024,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok
