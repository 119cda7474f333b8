"""No notebook (run tooling). The command line `python -m helpers ...` and what only it uses:
`bench`, `sweep`, and the notebooks' measured times."""
