"""Synthetic image families with known structure (disks, C^alpha, sines, Gaussian fields, transforms)."""
