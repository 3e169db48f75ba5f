"""The caller's process state a probe must leave as it was: :func:`isolated_state` saves and
restores RNG streams, threads, grad mode, the transformers log level and accelerate's process-wide
singletons, and hides a distributed launch from the probe."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

# Environment variables that make accelerate/transformers believe they run distributed. A probe is
# single-process by design (only rank 0 probes; other ranks must not join its collectives).
_DIST_ENV = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
             "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "ACCELERATE_USE_DEEPSPEED",
             "ACCELERATE_USE_FSDP", "ACCELERATE_MIXED_PRECISION", "ACCELERATE_TORCH_DEVICE",
             "ACCELERATE_USE_CPU", "ACCELERATE_DYNAMO_BACKEND")


@contextlib.contextmanager
def isolated_state(*, device: str | None = None, num_threads: int | None = None) -> Iterator[None]:
    """Run a probe's fine-tune (or a nested ``Trainer``) without disturbing the process around it.

    Saves and restores: the python, numpy, torch (and CUDA) RNG states (the fine-tune reseeds
    them all), torch's intra-op thread count, grad mode, the current CUDA device, the
    ``transformers`` log level, and the contents of accelerate's ``PartialState``,
    ``AcceleratorState`` and ``GradientState`` singletons. Those are process-wide (Borg pattern:
    every instance shares one dict): creating ``TrainingArguments`` resets them and the probe's
    ``Accelerator`` re-creates them with its own device and precision, which would otherwise leak
    into an outer ``Trainer``'s accelerator that reads the same dict. Inside the block they start
    empty and distributed-launch environment variables are hidden, so the probe is single-process.
    """
    import numpy as np
    import torch
    from accelerate.state import AcceleratorState, GradientState, PartialState
    from transformers.utils import logging as hf_logging

    py_state = random.getstate()
    np_state = np.random.get_state()
    torch_state = torch.random.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    cuda_device = torch.cuda.current_device() if cuda_states is not None else None
    threads = torch.get_num_threads()
    grad = torch.is_grad_enabled()
    verbosity = hf_logging.get_verbosity()
    singletons = [(cls._shared_state, dict(cls._shared_state)) for cls in (PartialState, AcceleratorState, GradientState)]
    env = {k: os.environ.pop(k) for k in _DIST_ENV if k in os.environ}
    try:
        for shared, _ in singletons:
            shared.clear()
        if device is not None and device != "cpu":
            os.environ["ACCELERATE_TORCH_DEVICE"] = str(device)
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        # A callback may run under no_grad / inference mode; the fine-tune needs gradients.
        torch.set_grad_enabled(True)
        with torch.inference_mode(False):
            yield
    finally:
        os.environ.pop("ACCELERATE_TORCH_DEVICE", None)
        os.environ.update(env)
        # In place: the singletons' storage objects are shared with every live instance.
        for shared, saved in singletons:
            shared.clear()
            shared.update(saved)
        hf_logging.set_verbosity(verbosity)
        torch.set_grad_enabled(grad)
        torch.set_num_threads(threads)
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.random.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
            torch.cuda.set_device(cuda_device)
