"""``python -m jitnet`` is the ``jitnet`` command."""

from .cli import main

raise SystemExit(main())
