"""Storage: the SQLite schema, the single writer (the saver), roll-ups, reads and upkeep."""
