"""Import of the official Caffe release (hujie-frank/SENet): ``senet convert --from caffe``.

``convert_caffe(path, arch, out)`` writes a checkpoint that ``senet.create_model(arch, weights=out)``
loads; see :mod:`senet.caffe.convert` for the blob mapping and the input convention, and
:mod:`senet.caffe.schema` for how the Caffe schema is read without Caffe or generated code.
"""

from .convert import (
    CAFFE_MEAN_BGR,
    CaffeLayer,
    caffe_preprocessing,
    caffe_state_dict,
    convert_caffe,
    fold_caffe_input,
    read_caffemodel,
)
from .names import caffe_names, resnet_caffe_name

__all__ = [
    "CAFFE_MEAN_BGR",
    "CaffeLayer",
    "caffe_names",
    "caffe_preprocessing",
    "caffe_state_dict",
    "convert_caffe",
    "fold_caffe_input",
    "read_caffemodel",
    "resnet_caffe_name",
]
