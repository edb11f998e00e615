"""The anomaly-detection family of the downstream (paper Tab. 11, 12, 33): anomalib's models trained per product on
the normal training images (``+ pairs`` variants: on a method's generated pairs too) and scored by our metric code.
See :mod:`downstream.detection.models` and ``python -m downstream.train_detector``."""
