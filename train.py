"""Train a BIVA: `python train.py --preset NAME --data DATASET --out DIR` (see --help)."""
from biva_core.train.cli import main

if __name__ == "__main__":
    main()
