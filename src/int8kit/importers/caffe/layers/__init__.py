"""Built-in converters of Caffe layers, grouped by family; importing this package registers them."""

from int8kit.importers.caffe.layers import activation, conv, norm, pooling, tensor, ssd  # noqa: F401
