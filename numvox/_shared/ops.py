"""What the framework wrappers (:mod:`numvox.tf`, :mod:`numvox.keras`) need to know of an
operation, declared once by the family that owns it (each family package exports ``OPS``)."""

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class OpSpec:
    """One public operation as the wrappers see it.

    Attributes
    ----------
    name : str
        The public name (``"aggregate_votes"``).
    function : callable
        The public in-memory function.
    arrays : tuple of str
        The names of its array arguments, in signature order.
    output_specs : callable
        ``output_specs(shapes, dtypes, options) -> [(shape, dtype), ...]``, one entry per
        result.  ``shapes`` maps each array argument to a list of ints with ``None`` for
        unknown sizes (or ``None`` for an unknown rank or an absent argument), ``dtypes``
        maps it to a NumPy dtype, ``options`` holds the keyword arguments.  A shape comes back
        as a list (``None`` where unknown) or ``None``.  The family computes its runtime
        output shapes with the same function, so static and runtime shapes cannot differ.
    """

    name: str
    function: Callable
    arrays: tuple
    output_specs: Callable
