"""Locustfiles of the load-generation benchmark (``netharness bench``, row "loadgen")."""
