"""Latency reports: results.json -> tables -> PNG -> HTML."""
