"""Float64 NumPy references of the basic layers, for the backbone tests (NHWC, HWIO)."""

import numpy as np


def np_conv(x, kernel, stride=1, padding=None, bias=None):
    """torch Conv2d in NHWC with an HWIO kernel, symmetric padding (k-1)//2, float64."""
    k = kernel.shape[0]
    p = (k - 1) // 2 if padding is None else padding
    x = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    ho = (x.shape[1] - k) // stride + 1
    wo = (x.shape[2] - k) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, kernel.shape[3]))
    for i in range(k):
        for j in range(k):
            patch = x[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            out += patch @ kernel[i, j]
    return out if bias is None else out + bias


def np_bn(x, params, stats):
    """Inference-mode BatchNorm with torch's eps."""
    return ((x - stats["mean"]) / np.sqrt(stats["var"] + 1e-5) * params["scale"]
            + params["bias"])


def np_relu(x):
    return np.maximum(x, 0.0)
