"""A stand-in for timm in the tests of the timm adapter's plumbing (timm imports torchvision,
whose PyPI wheels do not load beside this project's CPU torch): its weight-standardized
convolutions, rewritten from ``timm/layers/std_conv.py`` (``F.batch_norm`` of the weight
viewed as one sample of ``O`` channels)."""

__version__ = "stand-in"
