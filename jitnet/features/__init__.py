"""Placeholder: replaced by the HoG work."""
