"""Step-level attribution: which reasoning steps does the answer use?"""
