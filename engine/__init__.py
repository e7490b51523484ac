"""warn-dispatch: a real-time warning-dispatch engine for community policing.

The library is organised by concept: ``registry`` (who lives where, who is whose contact),
``audience`` (tag bitsets and the audience expression language), ``rules`` (validated rule files).
"""

__version__ = "0.1.0"
