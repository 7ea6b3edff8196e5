"""One schema revision per file, oldest first; each upgrades the one before it."""
