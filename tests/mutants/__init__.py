"""Mutants: deliberately wrong cross-entropies that the built-in suite must fail.

``stepwise.Stepwise`` is a correct implementation built from small steps;
``bugs.MUTANTS`` are its subclasses, each overriding one step with one realistic
bug. ``score.kill_table`` runs the suite against each mutant until a case kills
it. ``python -m tests.mutants`` prints the mutation score.
"""
