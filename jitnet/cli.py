"""Placeholder: replaced by the CLI work."""

def main(argv=None):
    raise NotImplementedError
