"""lightning-rec: recommendation with pretrained language models, sequence models, RL and meta-learning."""

__version__ = "0.1.0"
