"""What the paper measures: similarities and nearest neighbours, PSNR curves, Jacobian geometry,
reference denoisers (empirical optimal, disk tangent space) and C^α slopes; and the controls that tell
generalization from memorization and shared underfitting, with the pair's verdict (controls.py)."""
