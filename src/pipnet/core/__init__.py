"""The bottom layer: what every other layer uses and nothing above it decides.

The configuration types of a run (`pipnet.core.data_config`, `pipnet.core.train_config`) and small
utilities (`pipnet.core.utils`: atomic writes, tensor loading, the missing-extra error).
"""
