"""Use cases: one async handler per message type, written against the ports only."""
