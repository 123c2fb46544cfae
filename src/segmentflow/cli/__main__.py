"""`python -m segmentflow.cli`: the `segmentflow` command. A package's `__main__`, so the command modules
importing their shared helpers from `segmentflow.cli` get the one module (one `_state`) this runs."""

from segmentflow.cli import main

if __name__ == "__main__":
    main()
