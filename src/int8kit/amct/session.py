"""The calibration session: where AMCT inserts statistics layers into the user's Caffe net, int8kit
gives an object with onnxruntime's ``InferenceSession.run`` signature. Each ``run`` returns the
FP32 model's outputs and folds the batch into the core's running statistics (calib/running.py):
memory stays O(tensors x bins) whatever the number of batches, and a large batch runs in pieces
whose tapped activations stay within the core's chunk budget (runtime/chunking.py). Batches past ``batch_num`` are
run but not recorded, as AMCT stops calibrating at ``batch_num``. With ``update_bn`` the first
``bn_update_iterations`` recorded batches are kept (the BN update runs the quantized model on them)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from int8kit.calib.collect import HIST_PER_SAMPLE, MAP_HIST_PER_SAMPLE
from int8kit.calib.running import Buffers, RunningStats
from int8kit.calib.stats import Stats, model_fingerprint
from int8kit.calib.taps import activation_tensors, tap_model
from int8kit.config import CalibOptions
from int8kit.errors import CalibrationError, ConfigError
from int8kit.data.sources import model_input_specs
from int8kit.runtime.chunking import Chunker, rows
from int8kit.runtime.session import make_session, run_checked

log = logging.getLogger("int8kit.amct")


class CalibrationSession:
    """``run(output_names, input_feed)`` like onnxruntime, recording statistics of ``tensors``."""

    def __init__(self, model: onnx.ModelProto, tensors: Sequence[str], batch_num: int, providers: list[str],
                 keep: int = 0):
        self._model = model
        self.keep = keep  # recorded batches kept for the BN update (update_bn: bn_update_iterations)
        self.kept: list[dict[str, np.ndarray]] = []
        known = activation_tensors(model)
        inputs = {i.name for i in model.graph.input}
        self._outputs = [o.name for o in model.graph.output]
        self._inputs = [n for n in tensors if n in inputs]
        tapped, fetch = tap_model(model, [n for n in tensors if n not in inputs], known)
        self._session = make_session(tapped, providers=providers)
        self._fetch = fetch
        self._states: dict[str, RunningStats] = {}
        self._chunker = Chunker(splittable=all(s.batch_dim is None for s in model_input_specs(model)))
        self._bufs = Buffers()
        self._bins = CalibOptions.DEFAULT_BINS
        self.batch_num = batch_num
        self.batches = 0  # batches recorded
        self.samples = 0

    def get_inputs(self) -> list[Any]:
        return self._session.get_inputs()

    def get_outputs(self) -> list[Any]:
        return [o for o in self._session.get_outputs() if o.name in self._outputs]

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, np.ndarray], run_options: Any = None) -> list[np.ndarray]:
        """The model's outputs (all of them for ``None``), as ``InferenceSession.run``; the batch's
        statistics are recorded until ``batch_num`` batches have been."""
        names = list(self._outputs if output_names is None else output_names)
        unknown = [n for n in names if n not in self._outputs]
        if unknown:
            raise ConfigError(f"calibration_session.run: '{unknown[0]}' is not an output of the model; outputs: "
                              f"{', '.join(self._outputs)}.")
        if self.batches >= self.batch_num:
            if self.batches == self.batch_num:
                log.info("batch_num (%d) batches recorded; later batches run without recording", self.batch_num)
                self.batches += 1  # log once; the count of recorded batches is min(batches, batch_num)
            return run_checked(self._session, names, input_feed, where="a batch after calibration")
        if len(self.kept) < self.keep:
            self.kept.append({k: np.array(v, copy=True) for k, v in input_feed.items()})
        feed = {k: np.asarray(v) for k, v in input_feed.items()}
        pieces = []
        for piece in self._chunker.pieces(feed):  # the tapped run returns every activation: bounded pieces
            outs = run_checked(self._session, names + self._fetch, piece, where=f"calibration batch {self.batches}")
            self._chunker.returned(outs, piece)
            self._record(dict(zip(self._fetch, outs[len(names):])), piece)
            pieces.append((rows(piece), outs[:len(names)]))
        self.batches += 1
        self.samples += rows(feed)
        log.debug("calibration batch %d of %d recorded", self.batches, self.batch_num)
        if len(pieces) == 1:
            return pieces[0][1]
        if all(np.ndim(o) and len(o) == n for n, outs in pieces for o in outs):
            return [np.concatenate([outs[j] for _, outs in pieces]) for j in range(len(names))]
        return run_checked(self._session, names, feed, where="a batch")  # outputs without a batch axis: whole

    def _record(self, arrays: dict[str, np.ndarray], piece: Mapping[str, np.ndarray]) -> None:
        arrays.update({n: piece[n] for n in self._inputs if n in piece})
        for name, x in arrays.items():
            if not np.issubdtype(x.dtype, np.floating):
                continue
            state = self._states.get(name)
            if state is None:
                cap = MAP_HIST_PER_SAMPLE if x.ndim >= 4 else HIST_PER_SAMPLE
                state = self._states[name] = RunningStats(name, self._bins, 1, cap)
            state.update(x, self.batches, self._bufs)

    @property
    def recorded(self) -> int:
        return min(self.batches, self.batch_num)

    def stats(self, first_layer: str) -> Stats:
        """The statistics of the recorded batches; fewer than ``batch_num`` is AMCT's FAQ error."""
        if self.recorded == 0:
            raise CalibrationError("save_model was called before any calibration batch ran: run batch_num batches "
                                   "through calibration_session(graph).run(...) first.")
        if self.recorded < self.batch_num:
            raise CalibrationError(f"layer {first_layer} has statistics from {self.recorded} of {self.batch_num} batches: "
                                   "run more batches or lower batch_num.")
        return Stats({n: s.result() for n, s in self._states.items()}, self.samples, model_fingerprint(self._model),
                     self._bins)
