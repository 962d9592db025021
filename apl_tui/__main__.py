"""`python -m apl_tui` runs the `apl` command line."""

from apl_tui.cli import main

if __name__ == "__main__":
    main()
