"""``python -m ragstore``: the ``ragstore`` command."""

from ragstore.cli import main

if __name__ == "__main__":
    main()
