"""One training interface over DeepSpeed ZeRO and plain PyTorch.

Both give ``forward``/``backward``/``step`` with gradient accumulation inside ``step``
(the optimizer only moves every ``grad_accum`` micro-batches), and both expose the full
(un-partitioned) fp32 values and Adam moments of every trainable parameter, so that a
checkpoint is the same safetensors files whatever the ZeRO stage or number of ranks.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import sys
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from dnallm.hub import autocast, distributed_env, pick_device  # noqa: F401 (the training side's names)


def fast_forward(scheduler, steps: int) -> None:
    """Bring a fresh schedule to ``steps`` on resume (no optimizer step in between, on purpose)."""
    with warnings.catch_warnings():
        # torch warns that the schedule moved before the optimizer: here that is the point.
        warnings.filterwarnings(
            "ignore", message=re.escape("Detected call of `lr_scheduler.step()` before `optimizer.step()`")
        )
        for _ in range(steps):
            scheduler.step()


def grad_accum_steps(recipe, world: int) -> int:
    """Micro-batches per optimizer step: ``train.grad_accum``, or what makes
    micro x accum x ranks = ``train.global_batch_size`` when that is set."""
    t = recipe.train
    if t.global_batch_size <= 0:
        return t.grad_accum
    if getattr(t, "max_tokens", 0):
        raise ValueError(
            f"train.global_batch_size={t.global_batch_size} counts samples, which a token budget "
            f"(train.max_tokens={t.max_tokens}) does not fix: set train.grad_accum instead "
            "(global_batch_size=0)"
        )
    per_step = t.micro_batch_size * world
    if t.global_batch_size % per_step:
        raise ValueError(
            f"train.global_batch_size={t.global_batch_size} is not a multiple of micro_batch_size x ranks = "
            f"{t.micro_batch_size} x {world}; change one of them"
        )
    return t.global_batch_size // per_step


def fused_adamw(param_groups: list[dict]) -> torch.optim.AdamW:
    """AdamW in one kernel over every parameter (CPU and CUDA): the per-parameter loop would
    launch about ten kernels and read each parameter's step count back to the host."""
    return torch.optim.AdamW(param_groups, fused=True)


def make_adam_state(optimizer: torch.optim.Optimizer) -> None:
    """Adam's state for every parameter now, as ``Adam._init_group`` would make it lazily in the
    first step (step count, moments at zero): the memory is taken up front, as DeepSpeed's ZeRO
    optimizers take it at initialisation, and the first step launches what every later one does
    (no ``zeros_like`` twice and ``zeros`` per trained tensor). Other optimizers keep their own,
    lazy, state."""
    if not isinstance(optimizer, torch.optim.Adam):
        return
    for group in optimizer.param_groups:
        # fused / capturable keep the step on the parameter's device in fp32; otherwise torch keeps it
        # on the host, in fp64 under a fp64 default dtype.
        on_device = group["fused"] or group["capturable"]
        step_dtype = (
            torch.float64 if not group["fused"] and torch.get_default_dtype() == torch.float64 else torch.float32
        )
        for p in group["params"]:
            if optimizer.state[p]:
                continue
            state = {
                "step": torch.zeros((), dtype=step_dtype, device=p.device if on_device else "cpu"),
                "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
            }
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            optimizer.state[p] = state


def build_engine(
    recipe,
    model: nn.Module,
    param_groups: list[dict],
    *,
    total_steps: int,
    grad_accum: int,
    device: str,
    optimizer: tuple[str, object] | None = None,
):
    """Cosine schedule with linear warm-up, then DeepSpeed (``recipe.deepspeed``) or plain PyTorch.

    ``optimizer``: (name, builder from param groups); None is AdamW, or the optimizer a
    DeepSpeed JSON names (ZeRO-Offload's CPU Adam). An objective with its own optimizer
    refuses a JSON that would replace it.
    """
    from transformers import get_cosine_schedule_with_warmup

    t = recipe.train
    warmup = round(t.warmup_ratio * total_steps)

    def scheduler_fn(opt):
        return get_cosine_schedule_with_warmup(opt, warmup, total_steps)

    optimizer_fn = optimizer[1] if optimizer else fused_adamw
    if recipe.deepspeed:
        config = resolve_deepspeed_config(
            recipe.deepspeed,
            micro_batch_size=t.micro_batch_size,
            grad_accum=grad_accum,
            max_grad_norm=t.max_grad_norm,
            lr=t.lr,
            weight_decay=t.weight_decay,
            device=device,
        )
        if optimizer and "optimizer" in config:
            raise ValueError(
                f"{recipe.deepspeed} builds its own optimizer ({config['optimizer'].get('type')}); the {recipe.objective} recipe "
                f"trains with {optimizer[0]}: use a DeepSpeed config without an 'optimizer' section (zero2.json, zero3.json)"
            )
        return DeepSpeedEngine(
            model, param_groups, scheduler_fn, config=config, device=device, optimizer_fn=optimizer_fn
        )
    _, _, world = distributed_env()
    if world > 1:
        raise RuntimeError(
            "multi-process training needs a DeepSpeed config: add deepspeed=recipes/deepspeed/zero2.json"
        )
    return TorchEngine(
        model,
        param_groups,
        scheduler_fn,
        grad_accum=grad_accum,
        max_grad_norm=t.max_grad_norm,
        device=device,
        optimizer_fn=optimizer_fn,
    )


def _close_process_group() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def zero_stage(recipe) -> int:
    """The ZeRO stage of the recipe's DeepSpeed JSON (0 without one)."""
    if not recipe.deepspeed:
        return 0
    return int(json.loads(Path(recipe.deepspeed).read_text()).get("zero_optimization", {}).get("stage", 0))


def partition_from_host(model: nn.Module, config: dict, device: str) -> None:
    """ZeRO-3: turn a model built in host memory into partitioned parameters, one tensor at a
    time (it goes to the device, each rank keeps its shard, on the host with ``offload_param``),
    so the whole model is never on one GPU. DeepSpeed then leaves the module where it is and
    casts nothing, so the parameters take the config's bf16 / fp16 here first, as DeepSpeed
    casts an unpartitioned module (its fp32 master copies are built from them; a resume writes
    the checkpoint into those, ``load_master_weights``). Buffers (rotary tables) are not
    partitioned and go to the device."""
    import deepspeed

    half = (
        torch.bfloat16
        if config.get("bf16", {}).get("enabled") is True
        else torch.float16
        if config.get("fp16", {}).get("enabled") is True
        else None
    )
    if half is not None:
        for p in model.parameters():
            if p.is_floating_point() and p.dtype != half:
                p.data = p.data.to(half)
    deepspeed.zero.Init(module=model, config_dict_or_path=config)
    for module in model.modules():
        for name, buffer in module._buffers.items():
            if buffer is not None:
                module._buffers[name] = buffer.to(device)


def single_process_defaults() -> None:
    """Without a launcher (``dnallm train`` with a DeepSpeed config on one device), describe
    a one-process group; otherwise DeepSpeed would look for MPI."""
    if "WORLD_SIZE" in os.environ:
        return
    import socket

    with socket.socket() as sock:  # a free port on this machine
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for key, value in {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }.items():
        os.environ.setdefault(key, value)


def resolve_deepspeed_config(
    path: str,
    *,
    micro_batch_size: int,
    grad_accum: int,
    max_grad_norm: float,
    lr: float,
    weight_decay: float,
    device: str,
) -> dict:
    """Read a DeepSpeed JSON and fill its ``"auto"`` values from the recipe."""
    config = json.loads(Path(path).read_text())
    _, _, world = distributed_env()
    auto = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch_size * grad_accum * world,
        "gradient_clipping": max_grad_norm,
    }
    for key, value in auto.items():
        if config.get(key, "auto") == "auto":
            config[key] = value
    cuda = device.startswith("cuda")
    for key, enabled in (("bf16", cuda), ("fp16", False)):
        section = config.setdefault(key, {"enabled": "auto"})
        if section.get("enabled") == "auto":
            section["enabled"] = enabled
    params = config.get("optimizer", {}).get("params", {})
    for key, value in (("lr", lr), ("weight_decay", weight_decay)):
        if params.get(key) == "auto":
            params[key] = value
    config.setdefault("zero_allow_untested_optimizer", True)
    config.setdefault("steps_per_print", 10**9)
    config.setdefault("wall_clock_breakdown", False)
    return config


class TorchEngine:
    """Single-process PyTorch: autocast to bf16 on CUDA, fp32 on CPU."""

    def __init__(
        self,
        model: nn.Module,
        param_groups: list[dict],
        scheduler_fn,
        *,
        grad_accum: int,
        max_grad_norm: float,
        device: str,
        optimizer_fn=fused_adamw,
    ):
        self.module = model.to(device)
        self.optimizer = optimizer_fn(param_groups)
        make_adam_state(self.optimizer)
        self.scheduler = scheduler_fn(self.optimizer)
        self.grad_accum = grad_accum
        self.max_grad_norm = max_grad_norm
        self.device = device
        self.micro_steps = 0
        self.rank, self.world_size = 0, 1

    def __call__(self, **batch):
        with autocast(self.device):
            return self.module(**batch)

    def load_master_weights(self, values: dict[str, torch.Tensor]) -> None:
        """The module's parameters are the fp32 weights here: loading them was enough."""

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.grad_accum).backward()

    def step(self) -> None:
        self.micro_steps += 1
        if self.micro_steps % self.grad_accum:
            return
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        if self.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def full_param(self, p: nn.Parameter) -> torch.Tensor:
        return p.detach().float().cpu()

    def full_moments(self, p: nn.Parameter) -> dict[str, torch.Tensor] | None:
        """Every tensor the optimizer keeps for ``p`` (Adam's moments, Adafactor's factors), but the step."""
        state = self.optimizer.state.get(p)
        if not state:
            return None
        return {k: v.detach().float().cpu() for k, v in state.items() if torch.is_tensor(v) and k != "step"}

    def load_moments(self, moments: dict[nn.Parameter, dict[str, torch.Tensor]], step: int) -> None:
        for p, m in moments.items():
            state = {k: v.to(p.device, p.dtype) for k, v in m.items()}
            state["step"] = torch.tensor(float(step), device=p.device)  # fused AdamW: on the parameter's device
            self.optimizer.state[p] = state
        self.micro_steps = step * self.grad_accum
        fast_forward(self.scheduler, step)

    def whole_weights(self):
        """Context in which the module's weights are whole on every rank (for generation)."""
        return nullcontext()

    def barrier(self) -> None:
        pass


class DeepSpeedEngine:
    """``deepspeed.initialize`` around the fusion model (ZeRO stage from the JSON)."""

    def __init__(
        self,
        model: nn.Module,
        param_groups: list[dict],
        scheduler_fn,
        *,
        config: dict,
        device: str,
        optimizer_fn=fused_adamw,
    ):
        """``optimizer_fn`` builds the optimizer unless the JSON has an ``optimizer`` section
        (needed for ZeRO-Offload, whose CPU Adam DeepSpeed builds itself)."""
        import deepspeed

        single_process_defaults()
        opened = not torch.distributed.is_initialized()
        deepspeed.init_distributed()
        if opened:
            # At exit, not after the run: DeepSpeed keeps the group, and another run in this
            # process (tests, notebooks) reuses it. Left open, NCCL warns at exit.
            atexit.register(_close_process_group)
        zero = config.get("zero_optimization", {})
        if zero.get("offload_optimizer", {}).get("device") == "cpu":
            require_cpu_adam()
        optimizer = None if "optimizer" in config else optimizer_fn(param_groups)
        if zero.get("stage") == 3:
            partition_from_host(model, config, device)
        else:
            model.to(device)
        self._linked_at = None
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model,
            model_parameters=param_groups if optimizer is None else None,
            optimizer=optimizer,
            lr_scheduler=scheduler_fn,
            config=config,
        )
        self.module = self.engine.module
        self.device = device
        # Un-partitioned moments are read and written for Adam only; other optimizers (Adafactor)
        # keep flat partitioned state, so resuming restores the step and schedule alone.
        self.adam = any(
            c.__name__ in ("Adam", "AdamW", "DeepSpeedCPUAdam", "FusedAdam")
            for c in type(self._inner_optimizer()).__mro__
        )
        self.rank = torch.distributed.get_rank()
        self.world_size = torch.distributed.get_world_size()

    def __call__(self, **batch):
        return self.engine(**batch)

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)

    def step(self) -> None:
        self.engine.step()

    def load_master_weights(self, values: dict[str, torch.Tensor]) -> None:
        """Put a checkpoint's trainable values into the fp32 master weights. Loaded before
        ``deepspeed.initialize`` they went through the bf16 module copy DeepSpeed builds its
        master from, which drops their low bits; here they are written exactly."""
        from deepspeed.utils import safe_set_full_fp32_param

        for name, p in self.module.named_parameters():
            if p.requires_grad and name in values:
                safe_set_full_fp32_param(p, values[name].float().to(self.device))

    def full_param(self, p: nn.Parameter) -> torch.Tensor:
        """The whole fp32 value on rank 0 (the rank that writes checkpoints); every rank must
        call (a collective), the others get an empty tensor and keep no host copy."""
        from deepspeed.utils import safe_get_full_fp32_param

        value = safe_get_full_fp32_param(p)
        return value.detach().float().cpu() if self.rank == 0 else torch.empty(0)

    def _inner_optimizer(self):
        return getattr(self.engine.optimizer, "optimizer", self.engine.optimizer)

    def _link_moments(self, create: bool = False) -> None:
        """Make every parameter's view into the partitioned Adam moments valid.

        ZeRO-1/2 link these views once, after the first step of the first param group,
        when later groups have no state yet; re-linking fixes that. ``create`` allocates
        zero moments first (Adam creates them lazily on its first step), for resuming.
        """
        inner, zero = self._inner_optimizer(), self.engine.optimizer
        if create:
            # The flat fp32 partitions Adam steps over: ZeRO-3, ZeRO-1/2, or no ZeRO.
            flats = getattr(zero, "fp32_partitioned_groups_flat", None) or getattr(
                zero, "single_partition_of_fp32_groups", None
            )
            if flats is None:
                flats = [p for group in inner.param_groups for p in group["params"]]
            for flat in flats:
                if not inner.state[flat]:
                    inner.state[flat] = {
                        "step": torch.tensor(0.0),
                        "exp_avg": torch.zeros_like(flat),
                        "exp_avg_sq": torch.zeros_like(flat),
                    }
        if hasattr(zero, "_hp_optimizer_states_linked"):
            zero._hp_optimizer_states_linked = False
            zero._lazy_init_hp_params_optimizer_state()

    def full_moments(self, p: nn.Parameter) -> dict[str, torch.Tensor] | None:
        from deepspeed.utils import safe_get_full_optimizer_state

        if not self.adam:
            return None
        if self._linked_at != self.engine.global_steps:  # once per save, not once per parameter
            self._link_moments()
            self._linked_at = self.engine.global_steps
        try:
            out = {k: safe_get_full_optimizer_state(p, k) for k in ("exp_avg", "exp_avg_sq")}
        except (ValueError, KeyError) as e:  # no optimizer step taken yet (ZeRO-1/2: ValueError, ZeRO-3: KeyError)
            if self.engine.global_steps == 0:
                return None
            # After a step the moments exist: a checkpoint without them would not resume exactly.
            shape = tuple(getattr(p, "ds_shape", p.shape))  # ZeRO-3 keeps the whole shape aside
            raise RuntimeError(
                f"cannot gather the optimizer moments of a parameter of shape {shape} at step "
                f"{self.engine.global_steps} ({type(e).__name__}: {e})"
            ) from e
        if any(v is None for v in out.values()) or self.rank != 0:
            return None  # gathered on every rank (a collective), kept on rank 0 only
        return {k: v.detach().float().cpu() for k, v in out.items()}

    def load_moments(self, moments: dict[nn.Parameter, dict[str, torch.Tensor]], step: int) -> None:
        from deepspeed.utils import safe_set_full_optimizer_state

        if not self.adam and step > 0:
            # Said, not silent: only Adam's moments are saved un-partitioned (see __init__).
            print(
                f"resume: {type(self._inner_optimizer()).__name__} state is not kept under DeepSpeed; the step and "
                "learning-rate schedule resume, the optimizer's running statistics start afresh",
                file=sys.stderr,
            )
        if self.adam:
            self._link_moments(create=True)
            self._linked_at = None
            for p, m in moments.items():
                for key, value in m.items():
                    safe_set_full_optimizer_state(p, value, key)
            inner = self._inner_optimizer()
            for state in inner.state.values():
                if "step" in state:
                    state["step"] = torch.full_like(state["step"], step) if torch.is_tensor(state["step"]) else step
            for group in inner.param_groups:
                if "step" in group:
                    group["step"] = step
            _replay_cpu_adam_powers(inner, step)
        self.engine.global_steps = step
        self.engine.micro_steps = step * self.engine.gradient_accumulation_steps()
        fast_forward(self.scheduler, step)

    def whole_weights(self):
        """Context in which the module's weights are whole on every rank. Under ZeRO-3 this
        gathers them once, so that generation (token by token, and through ``embed``, which
        ``forward`` hooks do not see) does not gather each layer again for every token."""
        if self.engine.zero_optimization_stage() != 3:
            return nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(self.module.parameters()))

    def barrier(self) -> None:
        torch.distributed.barrier()


def require_cpu_adam() -> None:
    """ZeRO-Offload's optimizer is DeepSpeed's CPU Adam, a C++ op compiled on first use: fail
    with one line that says how to get it rather than a compiler's log mid-start-up."""
    from deepspeed.ops.op_builder import CPUAdamBuilder

    try:
        CPUAdamBuilder().load(verbose=False)
    except Exception as err:  # ninja missing, no compiler, no Python headers, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RuntimeError(
            f"ZeRO-Offload needs DeepSpeed's CPU Adam op, which could not be built here ({first}): install ninja and a C++ "
            "compiler (pip install ninja; apt-get install g++), or pre-build it with DS_BUILD_CPU_ADAM=1 pip install deepspeed "
            "--no-build-isolation --force-reinstall; or use recipes/deepspeed/zero3.json (no offload)"
        ) from err


def _replay_cpu_adam_powers(optimizer, step: int) -> None:
    """ZeRO-Offload's CPU Adam keeps beta^t in C++ as a running float product; a fresh one
    would compute ``pow(beta, t)`` instead, which differs in the last bits. Step its C++ state
    through 1..``step`` on empty tensors so the resumed run's bias correction is the
    uninterrupted run's, bit for bit."""
    native = getattr(optimizer, "ds_opt_adam", None)
    if native is None:
        return
    group, empty = optimizer.param_groups[0], torch.empty(0)
    beta1, beta2 = group["betas"]
    for t in range(1, step + 1):
        native.adam_update(
            optimizer.opt_id,
            t,
            group["lr"],
            beta1,
            beta2,
            group["eps"],
            group["weight_decay"],
            group["bias_correction"],
            empty,
            empty,
            empty,
            empty,
        )
