"""graphscope's version (written into every store it makes)."""

__version__ = "0.1.0"
