"""Stage 2: attention from the answer to the reasoning, per (layer, head), without T x T patterns.

* :mod:`.capture` — capture softmax rows for chosen queries through transformers' AttentionInterface.
* :mod:`.segments` — per-segment masses (a2r, a2p, ...), :class:`HeadScores`, the resumable batch run.
* :mod:`.heads` — ranking Reasoning-Focus Heads with bootstrap stability; overlap with reference lists.
* :mod:`.tokens` — per-reasoning-token attention and self-reflection cue statistics.
* :mod:`.induction` — induction-head scores with the same capture (and the bar an induction head must reach).
* :mod:`.retrieval` — retrieval-head scores (Wu et al. 2024 copy-paste criterion, teacher-forced needle tests).
* :mod:`.overlaps` — RFH overlap with induction/retrieval heads before and after each bar; the paper's lists.
* :mod:`.ablation` (+ :mod:`.ablation_result`) — the causal test: RFHs ablated during answering vs random heads.
* :mod:`.debugging` — which reasoning steps the RFHs read in failed (and correct) traces.
"""
