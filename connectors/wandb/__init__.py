"""The W&B connector: local run folders (the .wandb transaction log) and the public API."""
