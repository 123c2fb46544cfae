"""`python -m segmentflow`: the `segmentflow` command."""

from segmentflow.cli import main

if __name__ == "__main__":
    main()
