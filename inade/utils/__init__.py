"""Small utilities: atomic file writes (:mod:`inade.utils.files`) and command-line user errors
(:mod:`inade.utils.errors`)."""
