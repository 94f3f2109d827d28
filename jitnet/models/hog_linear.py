"""Placeholder."""

class HogLinearClassifier:
    pass
