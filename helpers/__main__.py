"""No notebook (run tooling). `python -m helpers ...`: the course's command line (see helpers/commands/cli.py)."""

from helpers.commands.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
