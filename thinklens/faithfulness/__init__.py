"""Faithfulness: does the answer follow a hint the reasoning never mentions, and by which path (issue 23)."""
