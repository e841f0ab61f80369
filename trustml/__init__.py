"""trustml: trustworthy machine learning for language — the package behind the executable book.

Sub-packages mirror the book's parts: ``trustml.privacy``, ``trustml.federated``, ``trustml.fairness``;
``trustml.data`` and ``trustml.models`` hold what the chapters share, ``trustml.viz`` the three views of
a trade-off.
"""

#: The book's version: the Colab cells install trustml at tag ``v{__version__}`` (checked by tests).
__version__ = "0.1.0"
