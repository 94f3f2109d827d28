"""Placeholder: replaced by the core layers work."""
