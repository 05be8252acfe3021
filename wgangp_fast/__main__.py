"""`python -m wgangp_fast train ...`: the command line of wgangp_fast.cli."""

from .cli import main

raise SystemExit(main())
