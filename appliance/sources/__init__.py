"""Data sources that publish onto the bus: the rig simulator (and, later, WITS0 ingest and file replay)."""
