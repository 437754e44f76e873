"""`python -m generator.train_default [--resume]`: the command that trains the default model; the code is
`generator.training.train_default` (kept so the checkpoints' README and running jobs keep one command)."""

from generator.training.train_default import main

if __name__ == "__main__":
    raise SystemExit(main())
