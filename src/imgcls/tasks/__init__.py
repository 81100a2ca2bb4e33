"""Tasks: what the entry points run (train, predict). Each reads top to bottom as a list of logged steps."""
