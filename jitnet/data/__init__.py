"""Placeholder: replaced by the data work."""
