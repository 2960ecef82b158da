"""pefthub: for a model, task and training budget, how much does each PEFT method buy?"""

__version__ = "0.1.0"
