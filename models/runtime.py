"""The one inference runtime: an ONNX Runtime session around one streaming step of a shipped model.

The service, evaluation and benchmarks all run models through `StepRuntime`, so the contract
checks and input validation here are the only ones there are.
"""
from __future__ import annotations

import importlib.metadata
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from models.card import ModelCard, load_card
from models.contract import FEATURES, INPUTS, N_FEATURES, OUTPUTS

if TYPE_CHECKING:
    from models.registry import ModelInfo

DEVICES = ("auto", "cpu", "cuda")
_CPU = "CPUExecutionProvider"
_CUDA = "CUDAExecutionProvider"


class ModelContractError(ValueError):
    """The model folder does not honour the artifact contract (files, graph signature, card)."""


class ModelInputError(ValueError):
    """An input to step()/run_sequence() has the wrong type, shape or values."""


class DeviceUnavailableError(RuntimeError):
    """device="cuda" was requested but onnxruntime cannot run on a GPU here."""


@dataclass(frozen=True)
class StepResult:
    risk: np.ndarray        # [B] float32, probability in [0, 1]
    next_state: np.ndarray  # [B, S] float32, feed back as `state` at the patient's next observation


def _import_onnxruntime(device: str):
    # onnxruntime-gpu finds the CUDA/cuDNN libraries that torch's wheels ship only if torch has
    # loaded them first. Only worth the (slow) torch import when a GPU build is installed.
    if device != "cpu" and "onnxruntime" not in sys.modules:
        try:
            importlib.metadata.distribution("onnxruntime-gpu")
        except importlib.metadata.PackageNotFoundError:
            pass
        else:
            try:
                import torch  # noqa: F401
            except ImportError:
                pass
    import onnxruntime

    return onnxruntime


def _dims(shape) -> list:
    return list(shape) if shape is not None else []


def _check_signature(session, card: ModelCard, source: Path) -> None:
    """The graph's declared inputs/outputs against the contract and the card."""
    s = card.state_size
    expected = {
        "observation": N_FEATURES, "elapsed_hours": 1, "state": s,
        "risk": 1, "next_state": s,
    }
    problems: list[str] = []
    for kind, args, names in (("input", session.get_inputs(), INPUTS), ("output", session.get_outputs(), OUTPUTS)):
        got = [a.name for a in args]
        if sorted(got) != sorted(names):
            problems.append(f"{kind}s are {got}, the contract requires {list(names)}")
            continue
        for a in args:
            dims = _dims(a.shape)
            if a.type != "tensor(float)":
                problems.append(f"{kind} '{a.name}' is {a.type}, must be tensor(float) (float32)")
            if len(dims) != 2:
                problems.append(f"{kind} '{a.name}' has rank {len(dims)} {dims}, must be rank 2 [batch, width]")
                continue
            if isinstance(dims[0], int):
                problems.append(f"{kind} '{a.name}' fixes the batch dimension to {dims[0]}; it must be dynamic")
            width = expected[a.name]
            if dims[1] != width:
                why = "the card's state_size" if a.name in ("state", "next_state") else "the contract"
                problems.append(f"{kind} '{a.name}' has width {dims[1]}, {why} requires {width}")
    if problems:
        raise ModelContractError(f"{source}: graph does not match the contract/card: " + "; ".join(problems))


class StepRuntime:
    """One streaming step of a shipped model. Construct with `StepRuntime.open(model_dir)`."""

    def __init__(self, session, card: ModelCard, model_dir: Path):
        self._session = session
        self.card = card
        self.model_dir = model_dir
        self.provider: str = session.get_providers()[0]
        self.state_size: int = card.state_size
        self.threshold: float = card.threshold
        self.name: str = card.name
        self.version: str = card.version

    @classmethod
    def open(cls, model_dir: "str | Path | ModelInfo", device: str = "auto",
             intra_op_threads: int | None = None) -> "StepRuntime":
        """Load model.onnx + model_card.json from `model_dir` (a folder or a registry ModelInfo).

        device: "auto" (CUDA when onnxruntime offers it, else CPU), "cpu" or "cuda" (error if the GPU
        cannot be used). intra_op_threads: onnxruntime's per-op thread count (None = its default).
        """
        model_dir = Path(getattr(model_dir, "path", model_dir))
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
        if intra_op_threads is not None and intra_op_threads < 1:
            raise ValueError(f"intra_op_threads must be >= 1 or None, got {intra_op_threads}")
        onnx_path = model_dir / "model.onnx"
        if not onnx_path.is_file():
            raise ModelContractError(f"{onnx_path}: model file not found")
        card = load_card(model_dir / "model_card.json")

        ort = _import_onnxruntime(device)
        available = ort.get_available_providers()
        if device == "cpu":
            providers = [_CPU]
        elif _CUDA in available:
            providers = [_CUDA, _CPU]
        elif device == "cuda":
            raise DeviceUnavailableError(
                f"device='cuda' but onnxruntime {ort.__version__} offers only {available}; "
                "install onnxruntime-gpu with a matching CUDA, or use device='cpu'/'auto'")
        else:
            providers = [_CPU]

        options = ort.SessionOptions()
        options.log_severity_level = 3  # keep ORT's per-node placement chatter out of service logs
        if intra_op_threads is not None:
            options.intra_op_num_threads = intra_op_threads
        try:
            session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=providers)
        except Exception as err:  # ORT raises its own exception types for unreadable/invalid graphs
            raise ModelContractError(f"{onnx_path}: onnxruntime cannot load the graph: {err}") from None
        if device == "cuda" and session.get_providers()[0] != _CUDA:
            raise DeviceUnavailableError(
                f"device='cuda' but the session fell back to {session.get_providers()}; "
                "the CUDA libraries onnxruntime-gpu needs did not load")
        _check_signature(session, card, onnx_path)
        runtime = cls(session, card, model_dir)
        runtime._ort = ort
        runtime._probe()
        return runtime

    def _probe(self) -> None:
        """Run one step on two all-missing rows: catches graphs whose declared shapes lie, that
        cannot take a batch, or whose risk is not a probability."""
        obs = np.full((2, N_FEATURES), np.nan, dtype=np.float32)
        obs[:, FEATURES.index("ICULOS")] = [1.0, 2.0]
        try:
            risk, next_state = self._run(obs, np.zeros((2, 1), np.float32), self.new_state(2))
        except Exception as err:
            raise ModelContractError(f"{self.model_dir / 'model.onnx'}: a test step failed: {err}") from None
        if risk.shape != (2, 1) or next_state.shape != (2, self.state_size):
            raise ModelContractError(
                f"{self.model_dir / 'model.onnx'}: a batch-2 step returned risk {risk.shape} and next_state "
                f"{next_state.shape}; the contract requires (2, 1) and (2, {self.state_size})")
        if not (np.all(np.isfinite(risk)) and np.all((risk >= 0) & (risk <= 1))):
            raise ModelContractError(f"{self.model_dir / 'model.onnx'}: risk {risk.ravel()} is not a probability in [0, 1]")

    def _run(self, observation: np.ndarray, elapsed: np.ndarray, state: np.ndarray):
        risk, next_state = self._session.run(
            list(OUTPUTS), {"observation": observation, "elapsed_hours": elapsed, "state": state})
        return risk, next_state

    def __repr__(self) -> str:
        return f"StepRuntime({self.name} v{self.version}, S={self.state_size}, provider={self.provider})"

    def new_state(self, batch: int) -> np.ndarray:
        """The state of `batch` patients not yet seen: zeros [batch, S] float32."""
        if not isinstance(batch, (int, np.integer)) or batch < 0:
            raise ModelInputError(f"batch must be a non-negative integer, got {batch!r}")
        return np.zeros((int(batch), self.state_size), dtype=np.float32)

    # -- validation -------------------------------------------------------------------------------

    @staticmethod
    def _float_array(value, field: str) -> np.ndarray:
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as err:
            raise ModelInputError(f"{field}: cannot be read as an array: {err}") from None
        if not np.issubdtype(array.dtype, np.floating):
            raise ModelInputError(f"{field}: must be a float array (NaN marks missing values), got dtype {array.dtype}")
        return np.ascontiguousarray(array, dtype=np.float32)

    def _validate(self, observation, elapsed_hours, state) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        obs = self._float_array(observation, "observation")
        if obs.ndim != 2 or obs.shape[1] != N_FEATURES:
            raise ModelInputError(f"observation: must have shape [batch, {N_FEATURES}], got {list(obs.shape)}")
        batch = obs.shape[0]
        bad = np.argwhere(np.isinf(obs))
        if len(bad):
            r, c = bad[0]
            raise ModelInputError(f"observation: row {r}, column {c} ({FEATURES[c]}) is infinite; use NaN for missing")

        elapsed = self._float_array(elapsed_hours, "elapsed_hours")
        if elapsed.ndim == 1:
            elapsed = elapsed.reshape(-1, 1)
        if elapsed.ndim != 2 or elapsed.shape[1] != 1:
            raise ModelInputError(f"elapsed_hours: must have shape [batch] or [batch, 1], got {list(np.shape(elapsed_hours))}")
        if elapsed.shape[0] != batch:
            raise ModelInputError(f"elapsed_hours: has {elapsed.shape[0]} rows but observation has {batch}")
        bad = np.flatnonzero(~np.isfinite(elapsed[:, 0]) | (elapsed[:, 0] < 0))
        if len(bad):
            raise ModelInputError(f"elapsed_hours: row {bad[0]} is {elapsed[bad[0], 0]}; must be a finite number >= 0")

        st = self._float_array(state, "state")
        if st.ndim != 2 or st.shape[1] != self.state_size:
            raise ModelInputError(f"state: must have shape [batch, {self.state_size}], got {list(st.shape)}")
        if st.shape[0] != batch:
            raise ModelInputError(f"state: has {st.shape[0]} rows but observation has {batch}")
        if not np.all(np.isfinite(st)):
            raise ModelInputError("state: contains NaN or infinity; it must come from new_state() or a previous step")
        return obs, elapsed, st

    # -- inference --------------------------------------------------------------------------------

    def step(self, observation, elapsed_hours, state) -> StepResult:
        """One observation per patient: observation [B, 40] (NaN = missing), elapsed_hours [B] or
        [B, 1] (hours since that patient's previous observation, 0 for the first), state [B, S]."""
        obs, elapsed, st = self._validate(observation, elapsed_hours, state)
        if obs.shape[0] == 0:
            return StepResult(np.zeros(0, np.float32), self.new_state(0))
        risk, next_state = self._run(obs, elapsed, st)
        return StepResult(risk.reshape(-1).astype(np.float32, copy=False),
                          next_state.astype(np.float32, copy=False))

    def run_sequence(self, observations, elapsed) -> np.ndarray:
        """Risks [T] for one stay's T observations, starting from a new patient's state."""
        obs = self._float_array(observations, "observations")
        if obs.ndim != 2 or obs.shape[1] != N_FEATURES:
            raise ModelInputError(f"observations: must have shape [T, {N_FEATURES}], got {list(obs.shape)}")
        gaps = self._float_array(elapsed, "elapsed").reshape(-1) if np.ndim(elapsed) else None
        if gaps is None or gaps.shape[0] != obs.shape[0]:
            raise ModelInputError(f"elapsed: must have shape [T] = [{obs.shape[0]}], got {list(np.shape(elapsed))}")
        self._validate(obs, gaps, self.new_state(obs.shape[0]))  # reject bad rows before any work
        risks = np.empty(obs.shape[0], dtype=np.float32)
        state = self.new_state(1)
        for t in range(obs.shape[0]):
            risk, state = self._run(obs[t:t + 1], gaps[t:t + 1].reshape(1, 1), state)
            risks[t] = risk[0, 0]
        return risks

    def resident_states(self, batch: int) -> "ResidentStates":
        """States of `batch` new patients kept on the execution device between steps."""
        return ResidentStates(self, batch)

    def run_sequences(self, stays: Sequence[tuple[np.ndarray, np.ndarray]],
                      resident: bool | None = None) -> list[np.ndarray]:
        """Risks for many stays at once: (observations [T_i, 40], elapsed [T_i]) each, stepped in
        lockstep so every ONNX call carries the stays still running. Same numbers as calling
        run_sequence on each stay, far fewer session calls.

        resident: keep the states on the execution device between hours (None: on CUDA only), so
        each hour moves only observations in and risks out, not the [B, S] state both ways."""
        checked = []
        for i, (o, e) in enumerate(stays):
            try:
                obs = self._float_array(o, "observations")
                if obs.ndim != 2 or obs.shape[1] != N_FEATURES:
                    raise ModelInputError(f"observations: must have shape [T, {N_FEATURES}], got {list(obs.shape)}")
                gaps = self._float_array(e, "elapsed").reshape(-1)
                if gaps.shape[0] != obs.shape[0]:
                    raise ModelInputError(f"elapsed: has {gaps.shape[0]} values for {obs.shape[0]} observations")
                self._validate(obs, gaps, self.new_state(obs.shape[0]))
            except ModelInputError as err:
                raise ModelInputError(f"stay {i}: {err}") from None
            checked.append((obs, gaps))
        if not checked:
            return []
        lengths = np.array([len(o) for o, _ in checked], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        values = np.concatenate([o for o, _ in checked])
        gaps = np.concatenate([g for _, g in checked])
        # Longest first, so the stays still running at hour t are always a prefix of the batch.
        order = np.argsort(-lengths, kind="stable")
        risks = np.empty(len(values), dtype=np.float32)
        if resident is None:
            resident = self.provider == _CUDA
        states = self.resident_states(len(checked)) if resident else None
        state = None if resident else self.new_state(len(checked))
        for t in range(int(lengths.max())):
            n = int(np.count_nonzero(lengths[order] > t))
            rows = offsets[order[:n]] + t
            if states is not None:
                risks[rows] = states.step(values[rows], gaps[rows, None])
            else:
                risk, state[:n] = self._run(values[rows], gaps[rows, None], state[:n])
                risks[rows] = risk[:, 0]
        return [risks[offsets[i]:offsets[i + 1]] for i in range(len(checked))]


class ResidentStates:
    """The states of a fixed batch of patients, kept where the model runs (GPU memory under the CUDA
    provider) between steps through ONNX Runtime's IO binding: a step moves only the observations in
    and the risks out. Two device buffers take turns as `state` and `next_state`.

    Step the first n patients with observations [n, 40]; n may shrink from step to step (patients
    whose stays ended must be the tail), as in a longest-first lockstep over stays.
    """

    def __init__(self, runtime: StepRuntime, batch: int):
        ort = runtime._ort
        self._runtime = runtime
        self._device = "cuda" if runtime.provider == _CUDA else "cpu"
        self.batch = int(batch)
        zeros = runtime.new_state(self.batch)
        self._buffers = [ort.OrtValue.ortvalue_from_numpy(zeros, self._device, 0),
                         ort.OrtValue.ortvalue_from_numpy(zeros, self._device, 0)]
        self._current = 0
        self._binding = runtime._session.io_binding()

    def step(self, observation, elapsed_hours, n: int | None = None) -> np.ndarray:
        """Risks [n] for the first n patients (n = len(observation))."""
        obs = np.ascontiguousarray(StepRuntime._float_array(observation, "observation"))
        gaps = np.ascontiguousarray(StepRuntime._float_array(elapsed_hours, "elapsed_hours").reshape(-1, 1))
        n = obs.shape[0] if n is None else n
        if obs.shape != (n, N_FEATURES) or gaps.shape[0] != n or n > self.batch:
            raise ModelInputError(
                f"observation {list(obs.shape)} and elapsed_hours {list(gaps.shape)} must be [n, {N_FEATURES}] "
                f"and [n, 1] with n <= {self.batch}")
        if not np.all(np.isfinite(gaps)) or np.any(gaps < 0):
            raise ModelInputError("elapsed_hours: must be finite and >= 0")
        size = self._runtime.state_size
        b = self._binding
        b.bind_cpu_input("observation", obs)
        b.bind_cpu_input("elapsed_hours", gaps)
        src, dst = self._buffers[self._current], self._buffers[1 - self._current]
        # a prefix of a row-major [batch, S] buffer is itself a contiguous [n, S] tensor
        b.bind_input("state", self._device, 0, np.float32, [n, size], src.data_ptr())
        b.clear_binding_outputs()
        b.bind_output("risk", "cpu")  # outputs come back in binding order: risk first
        b.bind_output("next_state", self._device, 0, np.float32, [n, size], dst.data_ptr())
        self._runtime._session.run_with_iobinding(b)
        self._current = 1 - self._current
        return b.get_outputs()[0].numpy()[:, 0]

    def states(self) -> np.ndarray:
        """The current states, copied to the host [batch, S]."""
        return self._buffers[self._current].numpy()
