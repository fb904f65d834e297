"""Small utilities: a dependency-free PNG reader/writer."""
