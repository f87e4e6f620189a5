"""Step-level attribution: which reasoning steps does the answer use?

A trace's reasoning is cut into steps (:mod:`thinklens.steps.segment`: lines or sentences, each with token and
character spans and a rule-based category). Steps travel between modules as absolute half-open token spans within
``trace.ids`` (``spans: list[tuple[int, int]]``). Each method gives one number per step:

* ``attention`` (:mod:`thinklens.steps.attention`): answer→step attention mass of the Reasoning-Focus Heads; the
  step→step attention of every head also yields Thought Anchors' *receiver heads* (:mod:`thinklens.steps.receivers`);
* ``suppression``, ``truncation``, ``resampling``: causal / black-box methods (their own modules);

:mod:`thinklens.steps.agreement` compares the methods, :mod:`thinklens.steps.run` runs them over a trace file
(``thinklens steps``), :mod:`thinklens.steps.results` holds the saved result. Importing this package is cheap.
"""
