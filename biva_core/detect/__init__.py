"""The anomaly detector of spec section 6: per-image statistics, the reference, p-values and their combination."""
