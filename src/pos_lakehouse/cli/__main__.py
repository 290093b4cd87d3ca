"""`python -m pos_lakehouse.cli`: the `pos-lakehouse` command."""

from pos_lakehouse.cli import main

raise SystemExit(main())
