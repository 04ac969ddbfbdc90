"""The bottom layer: what every other layer uses and nothing above it decides.

The configuration types of a run (:mod:`pipnet.core.data_config`, :mod:`pipnet.core.train_config`) and small
utilities (:mod:`pipnet.core.utils`: atomic writes, tensor loading, the missing-extra error).
"""
