"""A Django app that publishes real-time events through rtcore's outbox consumer."""
