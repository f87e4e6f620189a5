"""Command-line interface: one module per subcommand, each a thin layer over the public API.

A subcommand module defines ``register(subparsers)``: it adds its parser (arguments parsed into a dataclass) and
sets ``func`` to a ``run(args) -> int`` that only calls the API. ``main`` discovers the modules, so a new stage adds
a file here and touches nothing else.
"""
