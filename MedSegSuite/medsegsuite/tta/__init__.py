"""Per-case test-time adaptation of frozen 2D source models: VPTTA, GraTa, TENT and DyNA day/night.

Modules: ``network`` (MONAI UNet source models + slice pre-processing), ``vptta``, ``grata``, ``tent``,
``dyna``, ``common`` (shared helpers, no-adaptation baseline), ``pipeline`` (a volume as a stream
of slices), ``shifts`` (SYNTHETIC multi-centre recipes), ``train`` (the shipped source models),
``evaluate`` (``medsegsuite tta eval``) and ``tasks`` (backend tasks ``tta.adapt``, ``dyna.*``).
"""
