"""No notebook (run tooling). `python -m helpers ...`: the course's command line (see helpers/cli.py)."""

from helpers.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
