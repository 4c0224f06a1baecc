"""Panel state in the scene: each method panel keeps its node selections in a parameter node
(Slicer's ``parameterNodeWrapper``), so they are saved with the scene, survive Reload and a module
switch, and are reset on scene close.

``wrap(cls)`` makes the wrapper class inside Slicer; slicer-core has no ``slicer.parameterNodeWrapper``
(the Logic works without a parameter node there), so it returns None.
"""
try:
    from slicer.parameterNodeWrapper import parameterNodeWrapper
except ImportError:  # slicer-core: logic only
    parameterNodeWrapper = None


def wrap(cls):
    """``cls`` (typed attributes named like the .ui widgets' ``SlicerParameterName``) as a
    parameter-node wrapper, or None where Slicer's wrapper does not exist."""
    return parameterNodeWrapper(cls) if parameterNodeWrapper is not None else None
