"""Probes: read the host (files, databases, services) and return facts. Never write."""
