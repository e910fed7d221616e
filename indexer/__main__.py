"""`python -m indexer` (and `torchrun -m indexer`): the command line."""

from indexer.cli import main

if __name__ == "__main__":
    main()
