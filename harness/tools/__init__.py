"""Registry governance (``netharness lint``) and replay captures (``netharness replay``)."""
