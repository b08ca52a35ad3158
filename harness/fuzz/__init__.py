"""Searching for failing calls: strategies, metamorphic properties, the search.

Layer 5: imports reports and below; independent of the gate.
"""
