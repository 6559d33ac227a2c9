"""Backbones and what they read: the registry and model factory, where their ImageNet weights come from, the
preprocessing each one carries, batched feature extraction with its cache, and the quick classifier (probe)."""
