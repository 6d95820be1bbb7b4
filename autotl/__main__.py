"""`python -m autotl ...` works like the `autotl` command (e.g. where the scripts folder is not on PATH)."""

from .cli import entry

if __name__ == "__main__":
    entry()
