"""``python -m goalhub``: the same command as ``goalhub``."""

from goalhub.cli import main

if __name__ == "__main__":
    main(prog_name="goalhub")
