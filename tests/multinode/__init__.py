"""Several rtcore nodes on one Redis: cross-node delivery, presence, control and faults."""
