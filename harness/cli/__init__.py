"""``python -m harness`` and ``lossconf``: argument parsing and the sub-commands.

Layer 6, the top: the only code that sees ``argparse``; builds a ``RunConfig``.
"""
