"""Training of the moderation heads (not runtime: the service never imports this package).

`python -m moderation.train` (or `python -m moderation.training.train`) retrains `moderation/heads.npz`
from the public sets and our own examples (`moderation/data/examples.jsonl`, read by `examples`).
"""
