"""The ``quotes-server`` command (the server itself lands with the server issue)."""

import sys


def main() -> None:
    """Say that the server is not there yet."""
    sys.exit("quotes-server: not implemented yet (see the server issue)")


if __name__ == "__main__":
    main()
