"""Stage 1, the empirical question: does the model's own reasoning improve its answer?

Pipeline: :mod:`~thinklens.empirical.datasets` (problems) -> :mod:`~thinklens.empirical.collect` (traces with and
without reasoning) -> :mod:`~thinklens.empirical.grading` (extract + judge answers) ->
:mod:`~thinklens.empirical.evaluate` (paired accuracy, bootstrap CI, McNemar); for open-ended tasks
:mod:`~thinklens.empirical.judge` scores answers with the WildBench v2 checklist judge. Every step reads and writes
resumable JSONL files.
"""
