"""gdm: how diffusion denoisers move from memorization to generalization, cell by cell.

Reproduces Kadkhodaie, Guth, Simoncelli & Mallat, "Generalization in diffusion models arises from
geometry-adaptive harmonic representations" (ICLR 2024) as a reusable, distributed instrument.
"""

__version__ = "0.1.0"
