"""``python generate_pipeline.py ARGS`` = ``aurl generate ARGS`` (see docs/HOW_TO_GENERATE.md)."""

import sys

from aurl.cli import main

if __name__ == "__main__":
    sys.exit(main(["generate", *sys.argv[1:]]))
