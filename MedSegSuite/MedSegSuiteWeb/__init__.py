"""MedSegSuite in the browser: the three method panels and the hub on Slicer's own core (trame-slicer).

Runs in its own environment (``.venv-web``: trame-slicer pins slicer-core 5.11 / vtk 9.6.0, the desktop
backend uses 5.13), with the backend packages reached through a ``.pth`` file. The panels bind the same
GUI-free logic as the desktop modules (MethodLogic subclasses, JobRunner, the segment writer): this package
only holds the page and the glue.
"""
