"""`python -m biva_core.evaluate`: the evaluation CLI, biva_core/eval/evaluate.py."""
from biva_core.eval.evaluate import main

if __name__ == "__main__":
    main()
