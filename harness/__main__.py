from harness.cli.exit import entry

if __name__ == "__main__":  # not when a --jobs worker (spawn) imports the main module
    entry()
