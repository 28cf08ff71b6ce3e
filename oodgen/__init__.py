"""oodgen: unsupervised OOD detection with deep generative models, in JAX."""
