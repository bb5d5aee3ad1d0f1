"""Small helpers every stage may use (no tensorforge imports): atomic file writes, the progress bar."""
