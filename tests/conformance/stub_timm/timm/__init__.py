"""A stand-in for timm in the tests of the timm adapter's plumbing (timm cannot be installed
beside this project's torch): its weight-standardized convolutions, rewritten from
``timm/layers/std_conv.py`` (``F.batch_norm`` of the weight viewed as one sample of ``O``
channels)."""

__version__ = "stand-in"
