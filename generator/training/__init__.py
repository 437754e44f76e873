"""Training and measuring the shipped default model (not runtime: the service never imports this package).

`data` renders the procedural clips, `default_arch` builds the components, `train_default` trains
them (`python -m generator.train_default`, resumable from `checkpoints/`), `scorer` reads a clip
back analytically and `diagnose` finds where the model loses the prompt. The runtime loads the
result from `generator/default_model` like any diffusers folder (`generator.model`).
"""
