"""Segmentation models (mmseg BiSeNet V2 / UPerNet, LFD) and their datasets."""
