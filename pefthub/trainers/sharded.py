"""Sharded full fine-tuning: one run trained by N processes with torch FSDP2 (``fully_shard``).

A ``full`` SFT run whose resources ask for ``num_gpus > 1`` trains in ``num_gpus`` ranks (one per
GPU with NCCL, or CPU processes with gloo), each holding a 1/N shard of every parameter, gradient
and AdamW state. FSDP2 rather than accelerate or DeepSpeed: it is torch itself (no extra
dependency), its per-parameter DTensor sharding works unchanged with torch's AdamW and
``clip_grad_norm_``, and the same code runs with gloo on the CPU, so it is tested here.

How a run goes: the runner loads and adapts the model on the CPU as for any run; :func:`train`
moves its weights into shared memory and spawns the ranks. Each rank builds the architecture on
the meta device, shards each decoder layer and then the root, fills its shard from the shared
weights, and runs the trainer's own loop with a :class:`DataShard`: every rank draws the same
batch and trains its contiguous ``1/N`` of it; the loss keeps the whole batch's normaliser (sum over
target tokens / the batch's target tokens) and gradients are summed, not averaged, across ranks,
so a sharded step is the single-process step. Rank 0 then gathers the full state dict into the
shared weights, and the runner evaluates and writes the result as for any run.

GRPO shards the same way: each rank rolls out, scores and trains its contiguous share of the step's
prompts (whole groups), with the full weights gathered on every rank for the rollout
(:meth:`DataShard.full_weights`); :mod:`pefthub.trainers.grpo` documents what it sums across ranks.

Only ``full`` with the built-in ``sft`` and ``grpo`` trainers shards: an adapter method with
``num_gpus > 1`` trains on one device (its trainable state is tiny; the other GPUs are not used);
``full`` with a TRL engine and ``num_gpus > 1`` is a one-line :class:`ConfigError` (TRL would need
accelerate's own launcher), and so are the GRPO options sharding does not serve (:func:`ranks`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue as queue_module
import shutil
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from pefthub.errors import ConfigError, PefthubError

#: The method and the trainers that shard across GPUs (the built-in SFT loop; not TRL's engine).
SHARDED_METHOD = "full"
SHARDED_TRAINERS = ("sft", "grpo")
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class DataShard:
    """Which share of each optimizer step's batch this process trains, and the sum across ranks.

    The single-process default (rank 0 of 1) takes the whole batch and sums nothing."""

    rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    def take(self, items: list) -> list:
        """This rank's contiguous share of ``items`` (its length is a multiple of the world size)."""
        if self.world_size == 1:
            return items
        per = len(items) // self.world_size
        return items[self.rank * per:(self.rank + 1) * per]

    def total(self, value: float) -> float:
        """``value`` summed over the ranks (every rank gets the sum)."""
        if self.world_size == 1:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item())

    def totals(self, values: list[float]) -> list[float]:
        """Each of ``values`` summed over the ranks, in one collective (unchanged in one process)."""
        if self.world_size == 1:
            return values
        import torch.distributed as dist

        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def maximum(self, value: int) -> int:
        """The largest of the ranks' ``value`` (every rank gets it)."""
        if self.world_size == 1:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """The ranks' equally long 1-d ``tensor`` concatenated in rank order: the whole batch's values
        from this rank's share (the tensor itself in one process)."""
        if self.world_size == 1:
            return tensor
        import torch.distributed as dist

        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @contextlib.contextmanager
    def full_weights(self, model: torch.nn.Module) -> Iterator[None]:
        """Within the block every rank holds the full (gathered) weights as plain tensors, and forwards
        gather nothing; on exit the model is sharded again. For rollouts: generation forwards a
        data-dependent number of times, which under FSDP would run a different number of all-gathers
        on each rank and deadlock. Gathering once (FSDP2's own ``unshard``/``reshard``, with resharding
        after forward paused) lets any rollout engine run on the rank's plain local model, at the
        memory of one full copy of the weights for the rollout's duration; transformers'
        ``synced_gpus`` would only serve ``generate`` and pay an all-gather per decoded token."""
        if self.world_size == 1:
            yield
            return
        from torch.distributed.fsdp import FSDPModule

        units = [m for m in model.modules() if isinstance(m, FSDPModule)]
        layers = [m for m in units if m is not model]  # the root never reshards after forward
        for unit in layers:
            unit.set_reshard_after_forward(False, recurse=False)
        try:
            for unit in units:
                unit.unshard()
            yield
        finally:
            for unit in units:
                unit.reshard()
            for unit in layers:
                unit.set_reshard_after_forward(True, recurse=False)


SINGLE = DataShard()


def ranks(method: str, trainer: str, batch_size: int, placement: Any, num_gpus: float | None,
          asked_device: str = "auto", options: Any = None) -> int:
    """How many ranks a run trains in: ``num_gpus`` for a ``full`` run asking for more than one GPU,
    else 1 (one device). ``asked_device`` is the run's ``device`` setting: ranks run on CUDA GPUs
    0 to N-1, or in CPU processes only when ``cpu`` is asked for by name. A sharded run that cannot go
    as asked is one :class:`ConfigError` line, before anything loads: another trainer than ``sft`` or
    ``grpo`` (TRL's engines), GRPO ``options`` sharding does not serve (:func:`refuse_grpo_options`), a batch
    that does not split evenly, too few GPUs, one GPU named, float16, or bf16 on the CPU."""
    if method != SHARDED_METHOD or not num_gpus or num_gpus <= 1:
        return 1
    world = int(num_gpus)
    where = f"resources.num_gpus = {num_gpus:g}"
    if world != num_gpus:
        raise ConfigError(f"{where}: sharded '{method}' fine-tuning needs a whole number of GPUs")
    if trainer not in SHARDED_TRAINERS:
        raise ConfigError(f"{where}: sharded '{method}' fine-tuning supports the "
                          f"{' and '.join(SHARDED_TRAINERS)} trainers, not '{trainer}' (use num_gpus = 1)")
    if trainer == "grpo":
        refuse_grpo_options(options, where)
    if batch_size % world:
        raise ConfigError(f"budget.batch_size = {batch_size} must be a multiple of {where} "
                          f"(each rank trains an equal share of every batch)")
    if placement.is_cuda:
        from pefthub.devices import cuda_count

        have = cuda_count()
        if have < world:
            raise ConfigError(f"{where} asks for sharded training on {world} GPUs, but torch sees {have} on "
                              f"this machine")
        if ":" in asked_device:
            raise ConfigError(f"device: '{asked_device}' names one GPU, but {where} trains on GPUs 0 to "
                              f"{world - 1} (use device 'cuda')")
        if placement.dtype == "float16":
            raise ConfigError("dtype: sharded full fine-tuning computes in bfloat16 or float32, not float16")
        return world
    if asked_device != "cpu":
        raise ConfigError(f"{where} asks for sharded training on {world} GPUs, but torch sees none on this "
                          f"machine (device 'cpu' shards across {world} CPU processes instead)")
    if placement.dtype != "float32":
        raise ConfigError(f"dtype: sharded full fine-tuning on the CPU computes in float32 (got {placement.dtype})")
    return world


def grpo_refusal(options: Any) -> str | None:
    """Why sharded GRPO cannot run with these trainer ``options`` (a ``GRPOOptions`` or its dict),
    or None: DAPO's dynamic sampling (a data-dependent number of rollout rounds per rank), a KL term
    (its reference is an unsharded deep copy of the model) and vLLM rollouts (one engine per rank
    with weight sync from the shards is not built)."""
    if options is None:
        return None
    get = options.get if isinstance(options, dict) else (lambda name, default=None: getattr(options, name, default))
    if get("dynamic_sampling", False):
        return "trainer_options.dynamic_sampling = true"
    if float(get("beta", 0.0) or 0.0) > 0:
        return f"trainer_options.beta = {get('beta'):g} (a KL term to a reference copy)"
    if get("rollout_backend", "auto") == "vllm":
        return "trainer_options.rollout_backend = 'vllm'"
    return None


def refuse_grpo_options(options: Any, where: str) -> None:
    """One :class:`ConfigError` line when sharded GRPO does not serve ``options`` (:func:`grpo_refusal`)."""
    reason = grpo_refusal(options)
    if reason is not None:
        raise ConfigError(f"{where}: sharded full fine-tuning with GRPO does not support {reason} "
                          f"(use num_gpus = 1, or drop the setting)")


# ---- the ranks -------------------------------------------------------------------------------
@dataclass
class _Job:
    """Everything a rank needs, pickled to it (the weights travel separately, in shared memory)."""

    trainer: Any
    tokenizer: Any
    method: Any
    task: Any
    budget: Any
    learning_rate: float
    seed: int
    model_config: Any
    param_dtype: torch.dtype
    world_size: int
    device_type: str       # "cpu" or "cuda"
    compute_dtype: str     # "float32" or "bfloat16"
    rendezvous: str        # file:// init method shared by the ranks


def shard_model(model: torch.nn.Module, *, device_type: str, world: int, compute_dtype: str = "float32") -> None:
    """Shard ``model`` in place with FSDP2: each decoder layer (the model's ``_no_split_modules``), then
    the root; bf16 compute with fp32 reduction when asked on CUDA; gradients summed across ranks."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device_type, (world,))
    policy = MixedPrecisionPolicy()
    if device_type == "cuda" and compute_dtype == "bfloat16":
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    block_names = set(getattr(model, "_no_split_modules", None) or ())
    blocks = [m for m in model.modules() if type(m).__name__ in block_names]
    if not blocks:
        raise PefthubError(f"{type(model).__name__} names no decoder layer class (_no_split_modules) to shard")
    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    # Each rank's loss is its share of the whole batch's mean, so the gradients add up across ranks
    # (a plain SUM reduction: gloo has no pre-multiplied sum).
    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.set_gradient_divide_factor(1.0)
            m.set_force_sum_reduction_for_comms(True)


def _follow_parent() -> None:
    """Let the launcher stop this rank (SIGTERM, which a local executor's run ignores and a spawned
    process inherits), and exit when the launching process is gone (killed run, Ctrl-C)."""
    import signal
    import threading
    import time

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def _rank_main(rank: int, job: _Job, shared: dict[str, torch.Tensor], messages: Any) -> None:
    """One rank: join the group, build and shard the model, train its share, gather the weights."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, \
        set_model_state_dict
    from transformers import AutoModelForCausalLM

    from pefthub.trainers.budget import Spent

    _follow_parent()
    if job.device_type == "cuda":
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", init_method=job.rendezvous, rank=rank, world_size=job.world_size,
                                device_id=device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // job.world_size))
        dist.init_process_group("gloo", init_method=job.rendezvous, rank=rank, world_size=job.world_size)
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(job.model_config).to(job.param_dtype)
        model = job.method.apply(model)
        shard_model(model, device_type=job.device_type, world=job.world_size, compute_dtype=job.compute_dtype)
        model.to_empty(device=device)
        keys = model.state_dict().keys()
        set_model_state_dict(model, {k: shared[k] for k in keys}, options=StateDictOptions(full_state_dict=True))
        with torch.no_grad():
            for name, buffer in model.named_buffers():  # rotary tables and other non-persistent buffers
                buffer.copy_(shared[name])

        trainer = job.trainer
        trainer.shard = DataShard(rank, job.world_size, str(device))
        # Every rank must run the same forwards (FSDP's collectives): no data-dependent shared-prefix forward.
        trainer.share_prefix_forward = False
        trainer.share_prompt_forward = False
        progress = (lambda event: messages.put(("event", event))) if rank == 0 else None
        spent = Spent()
        outcome = trainer.train(model=model, tokenizer=job.tokenizer, method=job.method, task=job.task,
                                budget=job.budget, learning_rate=job.learning_rate, seed=job.seed, spent=spent,
                                progress=progress)
        if outcome.status != "success":  # stop every rank: the others may wait in a collective
            messages.put(("outcome", rank, outcome))
            raise SystemExit(1)
        summed = getattr(trainer, "spent_per_rank", ("train_flops",))  # what each rank counted of its own share
        for name, total in zip(summed, trainer.shard.totals([getattr(spent, name) for name in summed])):
            setattr(spent, name, type(getattr(spent, name))(total))
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if rank == 0:
            with torch.no_grad():
                for key, value in full.items():
                    shared[key].copy_(value)
            messages.put(("outcome", rank, outcome))
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # Done, and everything said: skip the interpreter's teardown (seconds of C++ destructors per rank).
    messages.close()
    messages.join_thread()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def train(trainer: Any, *, model: torch.nn.Module, tokenizer: Any, method: Any, task: Any, budget: Any,
          learning_rate: float, seed: int, spent: Any, progress: Callable[[dict], None] | None, world: int,
          placement: Any) -> tuple[Any, dict]:
    """Train ``model`` (on the CPU, adapted by ``method``) in ``world`` sharded ranks on ``placement``'s
    device type (a :class:`pefthub.devices.Placement`, checked by :func:`ranks`); its weights are the
    trained ones afterwards. Returns rank 0's :class:`~pefthub.trainers.base.TrainOutcome` (a rank's
    failed outcome when one fails), its spending copied into ``spent``, and what a result records of
    the sharding: the ranks, the backend and rank 0's peak memory while training."""
    import torch.multiprocessing as mp
    from torch.multiprocessing import ProcessExitedException, ProcessRaisedException

    shared = dict(model.state_dict())
    shared.update(dict(model.named_buffers()))
    for tensor in shared.values():
        tensor.share_memory_()  # the model's own storage moves to shared memory: ranks read and write it
    workdir = tempfile.mkdtemp(prefix="pefthub-fsdp-")
    job = _Job(trainer=trainer, tokenizer=tokenizer, method=method, task=task, budget=budget,
               learning_rate=learning_rate, seed=seed, model_config=model.config,
               param_dtype=next(model.parameters()).dtype, world_size=world,
               device_type="cuda" if placement.is_cuda else "cpu", compute_dtype=placement.dtype,
               rendezvous=f"file://{os.path.join(workdir, 'rendezvous')}")
    messages = mp.get_context("spawn").Queue()
    outcomes: dict[int, Any] = {}
    failure = None

    def drain() -> None:
        while True:
            try:
                message = messages.get(timeout=0.05)
            except queue_module.Empty:
                return
            if message[0] == "event":
                if progress is not None:
                    progress(message[1])
            else:
                outcomes[message[1]] = message[2]

    processes = None
    try:
        processes = mp.start_processes(_rank_main, args=(job, shared, messages), nprocs=world, join=False,
                                       start_method="spawn")
        while True:
            drain()
            try:
                if processes.join(timeout=POLL_SECONDS):
                    break
            except (ProcessRaisedException, ProcessExitedException) as exc:
                failure = exc
                break
        drain()
    finally:
        for process in processes.processes if processes is not None else ():
            if process.is_alive():  # interrupted: no rank outlives the run
                process.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    failed = [outcomes[r] for r in sorted(outcomes) if outcomes[r].status != "success"]
    outcome = failed[0] if failed else outcomes.get(0)
    if outcome is None or (failure is not None and not failed):
        lines = str(failure).strip().splitlines() if failure is not None else []
        raise PefthubError(f"sharded training failed: {lines[-1] if lines else 'rank 0 reported no outcome'}")
    peaks = ("peak_rss_bytes", "peak_accelerator_bytes")
    record = {"ranks": world, "backend": "nccl" if placement.is_cuda else "gloo",
              **{f"rank0_{name}": getattr(outcome.spent, name) for name in peaks}}
    for f in dataclasses.fields(spent):
        if f.name not in ("seconds_total", "seconds_eval", *peaks):  # the caller measures its own process
            setattr(spent, f.name, getattr(outcome.spent, f.name))
    outcome.spent = spent
    return outcome, record


__all__ = ["DataShard", "SINGLE", "grpo_refusal", "ranks", "shard_model", "train"]
