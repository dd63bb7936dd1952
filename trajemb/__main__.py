"""Allow ``python -m trajemb``."""

from trajemb.cli import main

raise SystemExit(main())
