"""Reports: the JSON document and its renderings (terminal, Markdown, JUnit, HTML).

Layer 4: imports run and below.
"""
