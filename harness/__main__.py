import sys

from harness.cli.main import main

if __name__ == "__main__":  # not when a --jobs worker (spawn) imports the main module
    sys.exit(main())
