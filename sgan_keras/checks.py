"""The one test of "is this an integer" that the argument checks share.

An ``int`` or a NumPy integer passes (``num_classes=labels.max() + 1`` is an
``np.int64``); a bool, which Python counts as an int, does not, nor a float or
a string: ``int()`` would cut 2.5 filters to 2 and take ``"2"`` without a word.
Each caller keeps its own range and message. Standard library only, so that
``config.py`` can use it before TensorFlow is imported.
"""

import numbers


def is_integer(value):
    """True for an int or a NumPy integer, False for a bool (NumPy's too)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
