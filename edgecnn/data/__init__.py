"""Datasets, preprocessing and calibration sampling."""

from edgecnn.data.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Preprocessing"]
