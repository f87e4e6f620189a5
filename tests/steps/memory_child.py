"""Child process of the memory test: peak extra resident memory of one forward, plain or with step attention.

Usage: python memory_child.py MODE T CHUNK  (MODE: forward | steps). Prints one JSON object. The peak counter is
reset after the model and trace are built (``echo 5 > /proc/self/clear_refs`` resets VmHWM)."""
from __future__ import annotations

import gc
import json
import sys
from pathlib import Path


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def main(mode: str, seq: int, chunk: int) -> dict:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from thinklens.steps.attention import step_attention
    from thinklens.steps.segment import segment_reasoning, step_spans
    from thinklens.toy.tokenizer import build_tokenizer
    from thinklens.traces import Trace

    torch.set_num_threads(1)
    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, max_position_embeddings=seq + 64)
    model = Qwen2ForCausalLM(cfg).eval()
    model.set_attn_implementation("sdpa")
    head = "<｜begin▁of▁sentence｜><｜User｜>Compute it.<｜Assistant｜><think>\n"
    tail = "</think>\n\nThe answer is \\boxed{5}.<｜end▁of▁sentence｜>"
    line = "12+34=46 and 46*2=92 so we go on to 92-7=85\n"  # 44 characters = 44 tokens
    body = line * ((seq - 80) // len(line))
    trace = Trace.from_text(head + body + tail, tok)
    spans = step_spans(segment_reasoning(trace))
    ids = torch.tensor([trace.ids])
    with torch.no_grad():
        model(ids[:, :64], use_cache=False, logits_to_keep=1)  # warm-up (lazy allocations)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    base = _status("VmRSS")
    with torch.no_grad():
        if mode == "forward":
            model(ids, use_cache=False, logits_to_keep=1)
        else:
            sa = step_attention(model, trace, spans, chunk_elements=chunk)
            assert sa.step_step.shape[-1] == len(spans)
    return {"mode": mode, "T": len(trace), "n_steps": len(spans), "peak_extra_bytes": _status("VmHWM") - base}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
