"""`python -m biva_core.export`: a run into a shipped folder, biva_core/eval/export.py."""
from biva_core.eval.export import main

if __name__ == "__main__":
    main()
