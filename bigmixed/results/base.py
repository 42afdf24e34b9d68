"""The common base of fitted models, for code that must recognize a fit without importing the
results classes (which import it back lazily, e.g. bigmixed.inference.compare)."""


class FittedModel:
    """Base class of every fit record (LMMResults)."""

    __slots__ = ()
