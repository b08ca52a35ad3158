"""Running cases through adapters: configuration, sessions, the runner, comparison, results.

Layer 3: imports cases, oracle and adapters; never the gate, the reports or the CLI.
"""
