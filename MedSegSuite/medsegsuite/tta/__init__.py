"""Per-case test-time adaptation of frozen 2D source models: VPTTA, GraTa, TENT and DyNA day/night.

Modules: ``network`` (MONAI UNet source models + slice pre-processing), ``vptta``, ``grata``, ``tent``,
``dyna``, ``common`` (shared helpers, no-adaptation baseline), ``pipeline`` (a volume in batches of its
slices, the per-volume schedule), ``gate`` (the safety gate: keep the source prediction unless adaptation
is trusted), ``shifts`` (physical acquisition shifts with cited ranges, simulated on real images),
``pseudo`` (deepbet *pseudo* brain masks for real MRs), ``train`` (the shipped source models), ``loco``
(leave-one-case-out brain models for the cross-case evaluation), ``evaluate`` (``medsegsuite tta eval``)
and ``tasks`` (backend tasks ``tta.adapt``, ``dyna.*``).
"""
