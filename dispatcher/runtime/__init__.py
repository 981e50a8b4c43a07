"""Runtimes: the drivers that own time and I/O around the sans-I/O core."""
