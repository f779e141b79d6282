"""Who drives the rounds: the coordinator's own loop (few places), or N round-driver actors (many)."""
