"""Derive the erf polynomial coefficients used by codegen/mathlib.py (least-squares fits in float64).

erf(x) = x * P(x^2) on |x| < 1 (degree 5 in x^2), and erf(x) = 1 - exp(-x^2) * Q(1/x) on 1 <= |x| < 4
(degree 7 in 1/x). Prints the coefficients, lowest degree first.
"""

import math

import numpy as np

erf = np.vectorize(math.erf)
erfc = np.vectorize(math.erfc)
x = np.concatenate([np.cos(np.linspace(0, np.pi, 2000)) * 0.5 + 0.5 + 1e-7, np.linspace(1e-6, 1, 2000)])
print("ERF_SMALL =", [float(c) for c in np.polynomial.polynomial.polyfit(x * x, erf(x) / x, 5)])
x = np.linspace(0.9, 4.0, 5000)
print("ERF_LARGE =", [float(c) for c in np.polynomial.polynomial.polyfit(1 / x, erfc(x) * np.exp(x * x), 7)])
