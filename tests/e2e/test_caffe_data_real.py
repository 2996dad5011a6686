"""The Caffe SSD face detector calibrated through a prototxt Data layer and through an image folder.

The Data layer reads a Caffe Datum LMDB (300x300 BGR datums, as ``convert_imageset
--resize_height 300 --resize_width 300`` stores them; resized here with Pillow) with
``transform_param { mean_value: 104 mean_value: 177 mean_value: 123 }``, the detector's own
preprocessing. The folder of the same photos with ``resize_h=300,resize_w=300;mean_value=104:177:123``
must give identical calibration statistics.
"""

from __future__ import annotations


import numpy as np
import pytest

pytestmark = pytest.mark.e2e
lmdb = pytest.importorskip("lmdb")



def test_data_layer_and_folder_give_identical_stats(facedet, tmp_path):
    pytest.importorskip("skimage", reason="real photos come from scikit-image")
    from PIL import Image

    from benchmarks.realdata import natural_photos
    from int8kit import api
    from int8kit.data.images import decode_rgb
    from int8kit.importers.caffe import convert
    from int8kit.importers.caffe.proto import Datum

    photos = natural_photos()[:6]
    folder = tmp_path / "photos"
    folder.mkdir()
    env = lmdb.open(str(tmp_path / "faces_lmdb"), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i, p in enumerate(photos):
            path = folder / f"p{i}.jpg"
            Image.fromarray(p).save(path, quality=92)
            rgb = np.asarray(Image.fromarray(decode_rgb(path)).resize((300, 300), Image.BILINEAR))
            chw = np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1))
            datum = Datum(channels=3, height=300, width=300, data=chw.tobytes(), label=0)
            txn.put(f"{i:08d}_p{i}.jpg".encode(), datum.SerializeToString())
    env.close()
    proto = tmp_path / "faces_data.prototxt"
    proto.write_text("""
layer { name: "data" type: "Data" top: "data" include { phase: TEST }
  transform_param { mean_value: 104 mean_value: 177 mean_value: 123 }
  data_param { source: "faces_lmdb" batch_size: 0 backend: LMDB } }
""")
    model = convert(*facedet)
    via_layer = api.calibrate(model, str(proto), progress=False).stats
    via_folder = api.calibrate(model, str(folder), preprocess="resize_h=300,resize_w=300;mean_value=104:177:123", progress=False).stats
    assert via_layer.samples == via_folder.samples == 6
    assert set(via_layer.tensors) == set(via_folder.tensors) and len(via_layer.tensors) > 30
    for name, a in via_layer.tensors.items():
        b = via_folder.tensors[name]
        assert (a.min, a.max) == (b.min, b.max), name
        assert np.array_equal(a.hist.counts, b.hist.counts), name
