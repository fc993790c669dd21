"""What the paper measures: similarities and nearest neighbours, PSNR curves, Jacobian geometry,
reference denoisers (empirical optimal, disk tangent space) and C^α slopes."""
