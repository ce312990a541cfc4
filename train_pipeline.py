"""``python train_pipeline.py ARGS`` = ``aurl train ARGS`` (e.g. ``--config configs/bach_small.yaml --out runs/x``)."""

import sys

from aurl.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
