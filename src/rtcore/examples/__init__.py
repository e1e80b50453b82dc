"""Runnable examples (``python -m rtcore.examples.echo``)."""
