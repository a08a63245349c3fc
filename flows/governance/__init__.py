"""Governance of plans and runs: what a plan would touch (``blast_radius``), what policy says of it (``policy``),
and the tamper-evident record of who decided what (``integrity`` for the hashing, ``audit`` for the trail)."""
