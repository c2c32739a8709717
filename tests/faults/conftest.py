"""The fault-injection suite: parts of the real native stack are killed with -9 while the demo's processes run.

It runs last (tests/conftest.py orders it), in the tests' own namespace (the `settings` fixture of
tests/conftest.py), and needs the stack's supervisor (`control stack up` starts it), which brings every
killed part back as it would in the demo.
"""
