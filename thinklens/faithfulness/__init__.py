"""Faithfulness: when a hint in the prompt moves the answer, does the reasoning say so, and which path does the hint
take to the answer? (Chen et al. 2025, "Reasoning Models Don't Always Say What They Think"; Macar, Bogdan et al. 2025,
"Thought Branches").

Each problem with a gold answer gets hinted twins, one per hint family (:mod:`thinklens.hints`), that point at a
wrong answer X. Both the unhinted problem and its hinted twins are generated with reasoning, sampled
(:mod:`thinklens.faithfulness.pairs`); a pair *takes the hint* when the hinted answer is X and the unhinted one was
not, and *verbalizes* it when the reasoning acknowledges the hint (:mod:`thinklens.faithfulness.detector`, optionally
an LLM judge: :mod:`thinklens.faithfulness.judge`). The faithfulness score of a family is the share of hint-taking
pairs that verbalize, with bootstrap CIs and Chen et al.'s normalization for random answer changes
(:mod:`thinklens.faithfulness.behaviour`); :mod:`thinklens.faithfulness.run` joins the behaviour to the mechanism
(:mod:`thinklens.faithfulness.mechanism`) and saves a :class:`thinklens.faithfulness.result.FaithfulnessResult`.

Kept light: importing this package imports nothing else.
"""
