"""The facade's error, in a module of its own so that the stages beneath `XRMetaModel` (cold start, above all)
can raise it without importing the facade."""


class ModelError(ValueError):
    """A model cannot do what was asked: arguments that do not fit it, a part it does not have (a learned
    generator, the PECOS copy), or a model directory it cannot read."""
