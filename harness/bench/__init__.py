"""``netharness bench``: side-by-side figures, the trivial servers and locustfiles they compare against."""
