"""Conformance suites for the engine seams and the backends that run them."""
