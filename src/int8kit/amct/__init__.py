"""AMCT-compatible post-training quantization: change one import and keep the script.

    import int8kit.amct as amct          # was: from hotwheels import amct_caffe as amct
    amct.create_quant_config("config.json", "deploy.prototxt", "model.caffemodel", batch_num=2)
    graph = amct.init("config.json", "deploy.prototxt", "model.caffemodel", "tmp/record.txt")
    amct.weights_quantize_model(graph, "tmp/modified.prototxt", "tmp/modified.caffemodel")
    amct.activation_quantize_model(graph, "tmp/modified.prototxt", "tmp/modified.caffemodel")
    sess = amct.calibration_session(graph)            # the one changed line of the inference loop
    for batch in batches[:2]:
        sess.run(None, {"data": batch})
    amct.save_model(graph, "Both", "results/model")

A thin facade over int8kit's core (optimize, streaming statistics, plan, emit): the files are
AMCT's (config.json, .cfg, the record), the quantizer is int8kit's. See docs/amct.md.
"""

from int8kit.amct.facade import (
    activation_quantize_model, calibration_session, convert_model, create_quant_config, init, save_model, set_cpu_mode,
    set_gpu_mode, uninplace_model, weights_quantize_model,
)

__all__ = ["activation_quantize_model", "calibration_session", "convert_model", "create_quant_config", "init",
           "save_model", "set_cpu_mode", "set_gpu_mode", "uninplace_model", "weights_quantize_model"]
