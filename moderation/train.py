"""`python -m moderation.train`: the command that retrains the heads; the code is `moderation.training.train`."""

from moderation.training.train import main

if __name__ == "__main__":
    raise SystemExit(main())
