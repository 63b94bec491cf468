"""signalloop: a campaign learning engine that checks marketing signals before learning."""

__version__ = "0.1.0"
