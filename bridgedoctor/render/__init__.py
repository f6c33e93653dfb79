"""Renderers: findings to terminal text or Matrix HTML. No decisions are made here."""
