"""The stages of ``thinklens run``: thin adapters from a run directory to each stage's public API, and the registry
(:mod:`thinklens.stages.registry`) from which the run, its resume logic and its reproduce commands are derived."""
