"""How far each model's ONNX graph lies from its torch graph, and how large the values compared are.

``scgan export`` refuses a graph whose scores or map differ from torch's by more than the parity tolerance
(PARITY_ATOL + PARITY_RTOL x |value|) on a random batch and on the reference input. This prints, per model file and
input, the largest difference of each score and of the map, the largest magnitude of each, and ``used``: the largest
share of the tolerance a difference takes (1 = at the limit), and ``used_atol``, the same against PARITY_ATOL alone
(the tolerance before the relative part), without writing anything.

    python benchmarks/export_margin.py results/position_grid/z64/*_seed*/train/model.pt
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import onnxruntime as ort
import torch

from scgan.artifacts.export import _example, _export_graph
from scgan.artifacts.model_file import load_model
from scgan.artifacts.onnx_file import INPUT_NAME, OUTPUT_NAMES, PARITY_ATOL, PARITY_RTOL, reference_input


def _used(got: np.ndarray, want: np.ndarray, rtol: float = PARITY_RTOL) -> float:
    want = np.asarray(want, np.float64)
    return float((np.abs(np.asarray(got, np.float64) - want) / (PARITY_ATOL + rtol * np.abs(want))).max())


def margin(path: str) -> dict:
    loaded = load_model(path)
    spec = loaded.input_spec
    scorer = loaded.scorer().eval()
    session = ort.InferenceSession(_export_graph(scorer, spec, None).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    out = {"model": path, "atol": PARITY_ATOL, "rtol": PARITY_RTOL, "names": list(scorer.names)}
    for label, x in (("random", _example(spec, 3)), ("reference", torch.from_numpy(reference_input(spec)))):
        with torch.inference_mode():
            ts, tm = scorer(x)
        os_, om = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x.numpy()})
        ds = np.abs(os_ - ts.numpy()).max(axis=0)
        out[label] = {"score_diff": {n: float(f"{d:.3g}") for n, d in zip(scorer.names, ds)},
                      "score_value": {n: float(f"{v:.4g}") for n, v in zip(scorer.names, np.abs(ts.numpy()).max(0))},
                      "map_diff": float(f"{np.abs(om - tm.numpy()).max():.3g}"),
                      "map_value": float(f"{np.abs(tm.numpy()).max():.4g}"),
                      "used": round(max(_used(os_, ts.numpy()), _used(om, tm.numpy())), 3),
                      "used_atol": round(max(_used(os_, ts.numpy(), 0.0), _used(om, tm.numpy(), 0.0)), 3)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    for path in ap.parse_args().models:
        print(json.dumps(margin(path)), flush=True)


if __name__ == "__main__":
    main()
