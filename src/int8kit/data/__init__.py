"""Calibration and test data: arrays, sample sources (image folders, LMDB, Caffe Data layers) and LMDB writing."""

from int8kit.data.lmdb_store import LmdbWriter

__all__ = ["LmdbWriter"]
