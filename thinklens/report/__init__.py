"""Rendering: figures and the HTML report, built from *saved* results (never from a live model).

Why apart from computation: a run on a GPU cluster writes its files once; figures and ``report.html`` are then
rebuilt anywhere (``thinklens report DIR``) without a model. Stage figure modules live here (``fig_empirical``,
``fig_attention``, ``fig_heads``, ``fig_patching``, ``token_view``); :mod:`thinklens.report.html` assembles them
with the interactive :mod:`thinklens.report.layer_view` into one self-contained file; :mod:`.animation` writes the
layer view as a GIF/MP4 for slides.
"""
