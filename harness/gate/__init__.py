"""QoS assertions: thresholds, the CI gate command, and aborting a run early."""
