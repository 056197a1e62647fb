"""Pure customer logic: state updates, features, River models and segment rules.

Nothing in this package imports Faust, so every function here runs the same
in a worker, in ``segstream evaluate`` and in a unit test.
"""
