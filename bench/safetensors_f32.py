"""Reads an f32 .safetensors file into numpy arrays by name (the bench scripts' only reader, so
they need no safetensors package)."""
import json
import struct

import numpy as np


def read_f32(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", f"{name}: only f32 ({info['dtype']})"
        begin, end = info["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + begin:8 + n + end], dtype="<f4").reshape(
            info["shape"])
    return out
