"""``python -m migretti_core``: the same command as ``mg``."""

from migretti_core.console import main

if __name__ == "__main__":
    main()
