"""Features and densities: per-example gradient norms (the exact vmap path and the fast path), densities on
feature vectors, compressed lengths."""
