"""ModelFactory reads: which jobs and model versions a user may see."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone

from datanets.licences import LICENCES, licence_compatible
from datanets.models import Datanet, Snapshot, SnapshotRecord
from datanets.selectors import datanets_trainable_by, datanets_visible_to
from datanets.storage import media_path
from ledger.proofs import anchor_facts_for
from ledger.services import anchor_subject

from . import architectures, estimates, lineage
from .config import Estimate, TrainingConfig
from .models import (
    BaseModel,
    FineTuneJob,
    ModelVersion,
    ModelVersionParent,
    TrainingWorker,
    VersionNotice,
    VersionRevocation,
)


def _signed_in(user: Any) -> bool:
    return user is not None and getattr(user, "is_authenticated", False) and user.is_active


def jobs_visible_to(*, user: Any) -> QuerySet[FineTuneJob]:
    """A user's own jobs; staff see every job."""
    jobs = FineTuneJob.objects.select_related("base_model", "owner", "parent_version")
    if not _signed_in(user):
        return jobs.none()
    return jobs if user.is_staff else jobs.filter(owner=user)


def versions_visible_to(*, user: Any) -> QuerySet[ModelVersion]:
    """Published versions for everyone signed in, plus the user's own; staff see every version. Anonymous visitors
    see the published versions whose training data, and every ancestor's, is public (``_versions_with_hidden_data``):
    a manifest names its snapshots and an adapter carries their data, so a private Datanet's curators stay the only
    ones who decide who outside sees a model trained on it."""
    # with the revoked-records flag (a join, no query more): every list and page says it
    versions = ModelVersion.objects.select_related("base_model", "owner", "anchor", "revoked_records_flag")
    if not _signed_in(user):
        return versions.filter(published=True).exclude(pk__in=_versions_with_hidden_data())
    if user.is_staff:
        return versions
    return versions.filter(Q(published=True) | Q(owner=user))


def _versions_with_hidden_data() -> RawSQL:
    """The ids of the versions trained on a snapshot of a Datanet that is not public, and of every version built on
    one of those (a continuation or a merge carries its parents' training data in its weights): one recursive
    query, down the lineage edges."""
    quote = connection.ops.quote_name
    used = quote(ModelVersion.snapshots.through._meta.db_table)
    snapshots = quote(Snapshot._meta.db_table)
    datanets = quote(Datanet._meta.db_table)
    edges = quote(ModelVersionParent._meta.db_table)
    # only table names from the models' metadata go into the text; the visibility is a query parameter
    sql = (
        f"WITH RECURSIVE hidden(id) AS (SELECT u.modelversion_id FROM {used} u "  # noqa: S608
        f"JOIN {snapshots} s ON s.id = u.snapshot_id JOIN {datanets} d ON d.id = s.datanet_id "
        f"WHERE d.visibility <> %s UNION SELECT e.child_id FROM {edges} e JOIN hidden h ON e.parent_id = h.id) "
        "SELECT id FROM hidden"
    )
    return RawSQL(sql, [Datanet.Visibility.PUBLIC])  # noqa: S611 (table names only, see above)


def version_training_records(*, version: ModelVersion) -> QuerySet[Any]:
    """The snapshot leaves a version trained on (before de-duplication across snapshots), for attribution."""
    return SnapshotRecord.objects.filter(snapshot__in=version.snapshots.all()).order_by("snapshot_id", "leaf_index")


# Pages


DEVICE_FILES = ("/proc/driver/nvidia/gpus",)


def training_device() -> dict[str, str]:
    """Which device the training workers will use, told without importing torch in the web process.

    The worker trains on CUDA whenever ``torch.cuda.is_available()``; here an NVIDIA driver exposing a GPU
    (``/proc/driver/nvidia/gpus/*``) that ``CUDA_VISIBLE_DEVICES`` does not hide stands for that. It describes this
    machine: workers on other machines decide for themselves, which the version pages record ("trained on").
    """
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = [p for folder in DEVICE_FILES if Path(folder).is_dir() for p in Path(folder).iterdir()]
    if gpus and hidden not in ("", "-1"):
        return {"device": "cuda", "label": f"CUDA GPU ({len(gpus)} visible to the driver)"}
    reason = "CUDA_VISIBLE_DEVICES hides the GPU" if gpus else "no NVIDIA GPU on this machine"
    return {"device": "cpu", "label": f"CPU ({reason})"}


def worker_device_label() -> str:
    """This machine's training device in words, with the CPU threads torch will use (``OMP_NUM_THREADS``)."""
    label = training_device()["label"]
    threads = os.environ.get("OMP_NUM_THREADS")
    cores = f"{os.cpu_count() or 1} cores" + (f", OMP_NUM_THREADS={threads}" if threads else "")
    return f"{label}, {cores}"


def _visible(index: str, uuid: str) -> bool:
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is None:
        return True
    chosen = {part.strip() for part in hidden.split(",") if part.strip()}
    return index in chosen or uuid in chosen


def cuda_devices() -> list[dict[str, Any]]:
    """The CUDA GPUs this machine's training processes see, told without importing torch: ``{"index", "name",
    "memory_bytes"}`` each, from ``nvidia-smi`` (less those ``CUDA_VISIBLE_DEVICES`` hides); [] without an NVIDIA
    driver exposing a GPU. Where the driver shows GPUs but ``nvidia-smi`` does not answer, each is listed by the
    driver's model name with ``memory_bytes`` None. (Not run here: the development machine has no GPU.)"""
    if training_device()["device"] != "cuda":
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return _driver_gpus()
    devices = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4 or not _visible(parts[0], parts[1]):
            continue
        memory = int(parts[3]) * 1024 * 1024 if parts[3].isdigit() else None
        devices.append({"index": len(devices), "name": parts[2], "memory_bytes": memory})
    return devices


def _driver_gpus() -> list[dict[str, Any]]:
    names = []
    for folder in DEVICE_FILES:
        for gpu in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
            with contextlib.suppress(OSError):
                info = (gpu / "information").read_text(encoding="utf-8", errors="replace")
                names.append(
                    next(
                        (line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("Model:")),
                        "NVIDIA GPU",
                    )
                )
    return [{"index": i, "name": name, "memory_bytes": None} for i, name in enumerate(names)]


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity), at least 1."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_devices() -> dict[str, Any]:
    """What a worker announces in its heartbeat: ``kind`` ("cuda" or "cpu"), ``cpu`` (``cores``, ``memory_bytes``),
    ``cuda`` (``cuda_devices()``), ``max_processes``, the data-parallel processes it runs for one job (its GPUs,
    else its cores), and ``bitsandbytes``, whether QLoRA's library is installed (``gpu_precisions_live`` offers
    QLoRA only where it is). Without torch, so every worker can afford it on every beat."""
    gpus = cuda_devices()
    return {
        "kind": "cuda" if gpus else "cpu",
        "cpu": {"cores": cpu_cores(), "memory_bytes": host_memory_total()},
        "cuda": gpus,
        "max_processes": len(gpus) if gpus else cpu_cores(),
        "bitsandbytes": importlib.util.find_spec("bitsandbytes") is not None,
    }


def host_memory_total() -> int | None:
    """This machine's memory in bytes (``MemTotal`` of /proc/meminfo), None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
    except (OSError, StopIteration, ValueError):
        return None


def processes_error(config: TrainingConfig) -> str | None:
    """Why no live training worker can run ``config``'s processes on its device, or None when one can (or the job
    runs in one process, which every worker can). Compared with what the workers announce (``worker_devices``)."""
    if config.processes == 1 and config.device != "cuda":
        return None
    workers = training_workers_live()
    offers = [
        int((w.devices or {}).get("max_processes") or 0)
        for w in workers
        if config.device != "cuda" or (w.devices or {}).get("kind") == "cuda"
    ]
    need = f"{config.processes} processes" if config.processes > 1 else "a CUDA GPU"
    if not offers or max(offers) == 0:
        where = "with a CUDA GPU " if config.device == "cuda" else ""
        return (
            f"No live training worker {where}announces its devices, so none can run {need}: "
            "start one, or train in 1 process on any worker."
        )
    if config.processes > max(offers):
        unit = "GPUs" if config.device == "cuda" else "devices (GPUs, or CPU cores on a worker without GPUs)"
        return f"The live training workers run at most {max(offers)} processes ({unit}); {config.processes} asked for."
    return None


def host_memory_available() -> int | None:
    """This machine's available memory in bytes (``MemAvailable`` of /proc/meminfo), None where unknown: what "auto"
    gradient checkpointing compares a CPU job's estimate with before launch (the worker compares again with its
    own memory when the job starts; a GPU's memory is known only there)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None


def training_workers_live() -> list[TrainingWorker]:
    """The training queue's workers whose heartbeat is fresh (three beats), the free ones (no running job) first,
    then the most recently seen."""
    fresh_after = timezone.now() - timedelta(seconds=3 * int(settings.WORKER_HEARTBEAT_SECONDS))
    busy = set(FineTuneJob.objects.filter(status=FineTuneJob.Status.RUNNING).values_list("worker", flat=True))
    workers = list(TrainingWorker.objects.filter(last_seen__gte=fresh_after).order_by("-last_seen", "hostname"))
    return sorted(workers, key=lambda w: w.hostname in busy)


# The queue a Celery worker with a CUDA GPU consumes for training jobs, as its heartbeat row lists it.
GPU_TRAINING_QUEUE = "training-gpu"


def _cuda_devices(announced: Any) -> list[dict[str, Any]] | None:
    """The CUDA devices in a heartbeat's ``devices`` value, each as a dict; None when the value says nothing (absent,
    empty or of a shape this reader does not know), [] when it lists devices and none of them is CUDA. A device is a
    dict with "type" (or "kind") "cuda", or a name such as "cuda:0"; in what ``worker_devices`` announces
    ({"kind": ..., "cuda": [...], ...}) every entry of "cuda" is one."""
    if isinstance(announced, dict):
        if not announced:
            return None
        if isinstance(announced.get("cuda"), list):
            return [d if isinstance(d, dict) else {"name": str(d)} for d in announced["cuda"]]
        announced = [announced]
    if not isinstance(announced, list) or not announced:
        return None
    found: list[dict[str, Any]] = []
    for device in announced:
        if isinstance(device, str) and device.split(":")[0] == "cuda":
            found.append({"name": device})
        elif isinstance(device, dict) and "cuda" in (str(device.get("type", "")), str(device.get("kind", ""))):
            found.append(device)
    return found


def _runs_bf16(device: dict[str, Any]) -> bool:
    """A device that says it has no bfloat16 (``"bf16": false``, or a compute capability below 8.0) does not."""
    if device.get("bf16") is False:
        return False
    capability = device.get("capability", device.get("compute_capability"))
    if isinstance(capability, list | tuple) and capability and isinstance(capability[0], int | float):
        return capability[0] >= 8
    if isinstance(capability, str | int | float):
        try:
            return float(capability) >= 8
        except ValueError:
            return True
    return True


def _runs_qlora(device: dict[str, Any], worker: dict[str, Any]) -> bool:
    """QLoRA needs bitsandbytes on the worker and bfloat16 on the device; a worker or device that says it has no
    bitsandbytes (``"bitsandbytes": false``) cannot."""
    return _runs_bf16(device) and worker.get("bitsandbytes") is not False and device.get("bitsandbytes") is not False


def gpu_precisions_live() -> dict[str, list[str]]:
    """For each of ``estimates.GPU_PRECISIONS``, the hostnames of the live training workers (``training_workers_live``)
    that can train with it: those announcing a CUDA device (``worker_devices``; such a worker consumes the
    ``training-gpu`` queue by itself) able to (bf16: compute capability 8.0 or above when given; QLoRA: that, and
    bitsandbytes installed). A worker whose announcement is empty (of before devices were announced) is taken at
    the device it registered with."""
    able: dict[str, list[str]] = {precision: [] for precision in estimates.GPU_PRECISIONS}
    for worker in sorted(training_workers_live(), key=lambda w: w.hostname):
        announced = worker.devices if isinstance(worker.devices, dict) else {}
        devices = _cuda_devices(announced)
        if devices is None:
            devices = [{}] if worker.device == "cuda" else []
        if any(_runs_bf16(d) for d in devices):
            able["bf16"].append(worker.hostname)
        if any(_runs_qlora(d, announced) for d in devices):
            able["qlora-nf4"].append(worker.hostname)
    return able


def precision_refusals() -> dict[str, str]:
    """Why each precision that no live worker can train with is refused, in words for the person launching the
    job; "fp32" is never refused (every worker runs it)."""
    able = gpu_precisions_live()
    names = {"bf16": "bf16", "qlora-nf4": "QLoRA (4-bit NF4)"}
    return {
        precision: (
            f"{names[precision]} training needs a CUDA GPU worker (one consuming the {GPU_TRAINING_QUEUE} queue"
            f"{' with bitsandbytes' if precision == 'qlora-nf4' else ''}), and none that can is online now; "
            "choose fp32, or start such a worker and try again."
        )
        for precision, hosts in able.items()
        if not hosts
    }


@dataclass(frozen=True)
class TrainingEstimate:
    """A fine-tune's estimate (``TrainingConfig.estimate``) with where its figures come from: ``worker`` (the
    hostname that will most likely run it, "" when no training worker is alive), ``device_label``, ``source`` (in
    words), how many training workers are alive, and whether the worker holds the base model already."""

    estimate: Estimate
    worker: str
    device_label: str
    source: str
    live_workers: int
    model_loaded: bool

    @property
    def phases(self) -> list[tuple[str, str, float]]:
        """(phase, what the job page calls it, seconds) for each phase that takes time."""
        return [(p, estimates.PHASES[p], s) for p, s in self.estimate.phases if s > 0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.estimate.seconds,
            "phases": dict(self.estimate.phases),
            "steps": self.estimate.steps,
            "tokens": self.estimate.tokens,
            "device": self.estimate.device,
            "worker": self.worker,
            "device_label": self.device_label,
            "source": self.source,
            "measured": self.estimate.measured,
            "model_loaded": self.model_loaded,
            "memory_bytes": self.estimate.memory_bytes,
            "gradient_checkpointing": self.estimate.checkpointing,
        }


def _measured_elsewhere(*, base_model: BaseModel, device: str) -> tuple[estimates.Throughput | None, int]:
    """Throughput from the recent succeeded jobs of any worker on ``device`` ("cpu"/"cuda") for ``base_model``."""
    prefix = "cuda" if device == "cuda" else "cpu"
    rows = list(
        FineTuneJob.objects.filter(
            base_model=base_model, kind=FineTuneJob.Kind.TRAIN, status=FineTuneJob.Status.SUCCEEDED,
            device__startswith=prefix,
        )
        .exclude(phases=[])
        .order_by("-finished_at")
        .values_list("phases", flat=True)[: estimates.RECENT_JOBS]
    )  # fmt: skip
    fallback = estimates.fallback_for(device, base_model.parameters)
    return estimates.throughput_from(rows, fallback=fallback), len(rows)


def training_estimate(*, config: TrainingConfig, base_model: BaseModel, records: int, tokens: int) -> TrainingEstimate:
    """The estimate for a job of ``records`` records and ``tokens`` tokens on ``base_model``, from the throughput
    the training worker that will run it measured (``TrainingWorker.throughput``); a worker that has measured
    nothing yet borrows what other workers with its device measured, and with nothing measured at all the
    development machine's figures stand in (``estimates.FALLBACK``). ``source`` says which."""
    live = training_workers_live()
    worker = live[0] if live else None
    device = worker.device if worker else training_device()["device"]
    label = worker.device_label if worker else training_device()["label"]
    throughput, source = None, ""
    if worker is not None and (mine := worker.throughput.get(str(base_model.pk))):
        throughput = estimates.Throughput.from_dict(mine)
        source = f"measured by {worker.hostname} on its last {throughput.jobs} job{'s' if throughput.jobs != 1 else ''}"
    else:
        throughput, jobs = _measured_elsewhere(base_model=base_model, device=device)
        if throughput is not None:
            where = "this worker has measured nothing yet: " if worker else "no training worker is running: "
            source = (
                where + f"measured on {jobs} recent {device.upper()} job{'s' if jobs != 1 else ''} of other workers"
            )
    if throughput is None:
        where = "this worker has measured nothing yet" if worker else "no training worker is running"
        source = (
            f"{where}: a rough figure from the development machine ({device.upper()}); "
            "the first job measures this worker"
        )
    loaded = worker is not None and bool(worker.loaded_base) and worker.loaded_base == base_model.path
    estimate = config.estimate(
        memory_available=host_memory_available() if device == "cpu" else None,
        records=records,
        tokens=tokens,
        device=device,
        parameters=base_model.parameters,
        throughput=throughput,
        model_loaded=loaded,
        shape=architectures.model_shape(base_model.path),
    )
    return TrainingEstimate(
        estimate=estimate,
        worker=worker.hostname if worker else "",
        device_label=label,
        source=source,
        live_workers=len(live),
        model_loaded=loaded,
    )


def training_estimate_for(
    *, config: TrainingConfig, base_model: BaseModel, snapshots: Iterable[Snapshot]
) -> TrainingEstimate:
    """``training_estimate`` for the chosen snapshots, their tokens counted as each record type becomes text."""
    chosen = list(snapshots)
    records = sum(s.record_count for s in chosen)
    tokens = sum(
        estimated_tokens(words=s.words, records=s.record_count, formatting=config.formatting_for(s.datanet.record_type))
        for s in chosen
    )
    return training_estimate(config=config, base_model=base_model, records=records, tokens=tokens)


def base_models() -> QuerySet[BaseModel]:
    return BaseModel.objects.select_related("registered_by").order_by("-is_default", "name")


def snapshots_usable_by(*, user: Any) -> QuerySet[Snapshot]:
    """Snapshots ``user`` may train on (public Datanets; private ones they own or curate), by Datanet name, newest
    snapshot first."""
    return (
        Snapshot.objects.filter(datanet__in=datanets_trainable_by(user=user))
        .select_related("datanet")
        .order_by("datanet__name", "datanet_id", "-number")
    )


# SmolLM2's BPE turns English into about 1.3 tokens a word; the chat template adds role markers and the default
# system prompt (~30 tokens) to every record. Good enough for a pre-launch estimate; the job counts exactly.
TOKENS_PER_WORD = 1.3
CHAT_TEMPLATE_TOKENS = 30


def estimated_tokens(*, words: int, records: int, formatting: str) -> int:
    overhead = CHAT_TEMPLATE_TOKENS if formatting == "chat_template" else 2
    return int(words * TOKENS_PER_WORD) + records * overhead


def licence_check(*, snapshots: list[Snapshot]) -> dict[str, Any]:
    """Whether the chosen snapshots' licences combine: ``level`` is "ok", "warn" (allowed, with conditions that
    follow the model) or "block" (no licence allows combining them: job_launch refuses), with a ``message``."""
    licences = sorted({s.datanet.licence for s in snapshots})
    if not licences:
        return {"level": "", "message": "Choose at least one snapshot.", "licences": []}
    common = next(
        (
            candidate
            for candidate in LICENCES
            if all(licence_compatible(datanet_licence=candidate, contribution_licence=lic) for lic in licences)
        ),
        None,
    )
    if common is None:
        names = ", ".join(f"{s.datanet.name} ({s.datanet.licence})" for s in snapshots)
        return {
            "level": "block",
            "message": f"Incompatible licences: no licence allows combining {names}. Train on them separately.",
            "licences": licences,
        }
    conditions = []
    if "NC" in common:
        conditions.append("non-commercial use only")
    if "SA" in common or common == "ODbL-1.0":
        conditions.append("share-alike: what you publish from it must carry the same licence")
    if "BY" in common.upper() or common == "ODbL-1.0":
        conditions.append("credit the contributors")
    message = f"The training data can be used together under {common}"
    if len(licences) > 1:
        message += f" (combining {', '.join(licences)})"
    if conditions and ("NC" in common or "SA" in common or common == "ODbL-1.0"):
        return {"level": "warn", "message": message + ": " + "; ".join(conditions) + ".", "licences": licences}
    suffix = f": {'; '.join(conditions)}." if conditions else "."
    return {"level": "ok", "message": message + suffix, "licences": licences}


def version_list(*, user: Any, search: str = "") -> QuerySet[ModelVersion]:
    """The versions ``user`` may see, newest first, matching ``search`` in the name, the job's description, the
    base model or a training Datanet's name; snapshots (with Datanets) prefetched: a fixed number of queries."""
    versions = versions_visible_to(user=user).select_related("job")
    if search := search.strip():
        through = ModelVersion.snapshots.through
        datanet_match = through.objects.filter(
            modelversion_id=OuterRef("pk"), snapshot__datanet__name__icontains=search
        )
        versions = versions.filter(
            Q(name__icontains=search)
            | Q(job__description__icontains=search)
            | Q(base_model__name__icontains=search)
            | Q(Exists(datanet_match))
        )
    return versions.prefetch_related(
        Prefetch("snapshots", queryset=Snapshot.objects.select_related("datanet").order_by("pk"))
    ).order_by("-created_at", "-id")


def version_lineage(*, version: ModelVersion, user: Any) -> dict[str, Any]:
    """The version's direct lineage: the snapshots (with Datanets) the user may see, how many private Datanets it
    also trained on, its parent and child edges. A parent or child the user may not see is named by id only (the
    manifest names it anyway, by hash)."""
    visible = set(
        versions_visible_to(user=user)
        .filter(Q(child_links__child=version) | Q(parent_links__parent=version))
        .values_list("pk", flat=True)
    )
    parents = list(version.parent_links.select_related("parent").order_by("parent_id"))
    children = list(version.child_links.select_related("child").order_by("child_id"))
    data = version_training_data(version=version, user=user)
    return {
        "snapshots": data.snapshots,
        "private_datanets": data.private_datanets,
        "training_data": data,
        "parents": [(link, link.parent_id in visible) for link in parents],
        "children": [(link, link.child_id in visible) for link in children],
    }


@dataclass(frozen=True)
class TrainingData:
    """What a viewer may know of the data a version trained on."""

    snapshots: list[Snapshot]  # those of Datanets the viewer may see, by Datanet name and number
    private_datanets: int  # how many more Datanets it trained on that the viewer may not see

    @property
    def samples_shown(self) -> bool:
        """Sample prompts, references and answers come from the training records, so they are shown only to
        someone who may see every Datanet the version trained on."""
        return self.private_datanets == 0


def _training_data(snapshots_of: dict[int, list[Snapshot]], user: Any) -> dict[int, TrainingData]:
    """Each version's training snapshots (by version id) as ``user`` may see them: one query whatever the number."""
    datanet_ids = {s.datanet_id for snapshots in snapshots_of.values() for s in snapshots}
    visible = set(datanets_visible_to(user=user).filter(pk__in=datanet_ids).values_list("pk", flat=True))
    return {
        pk: TrainingData(
            snapshots=[s for s in snapshots if s.datanet_id in visible],
            private_datanets=len({s.datanet_id for s in snapshots} - visible),
        )
        for pk, snapshots in snapshots_of.items()
    }


def version_training_data(*, version: ModelVersion, user: Any) -> TrainingData:
    """The version's training snapshots as ``user`` may see them (two queries; a merge's are its parents' too)."""
    snapshots = list(version.snapshots.select_related("datanet").order_by("datanet__name", "number"))
    return _training_data({version.pk: snapshots}, user)[version.pk]


def versions_training_data(*, versions: Iterable[ModelVersion], user: Any) -> dict[int, TrainingData]:
    """``version_training_data`` for a page of versions whose snapshots are prefetched (``version_list``): one
    query more, whatever the page's size."""
    return _training_data({v.pk: list(v.snapshots.all()) for v in versions}, user)


def version_samples_for(*, version: ModelVersion, user: Any, seen: TrainingData | None = None) -> list[dict[str, Any]]:
    """The version's sample answers, or none when they would show ``user`` records of a Datanet they may not see
    (``seen``: their ``version_training_data``, when the caller has it already)."""
    if not (seen or version_training_data(version=version, user=user)).samples_shown:
        return []
    return [s for s in version.samples or [] if isinstance(s, dict)]


def version_adapter_files(*, version: ModelVersion) -> list[dict[str, Any]]:
    """``{"name", "sha256", "bytes"}`` of each file of the version's adapter, by name.

    A v2 manifest lists them itself (that list is what was anchored). A v1 manifest hashed only the weights
    (``adapter_sha256``), so the files are read from the stored folder, the weights named by the hash stored with the
    version; a file missing there is listed with ``sha256`` and ``bytes`` null (the weights keep their hash)."""
    anchored = lineage.manifest_adapter_files(version.manifest)
    if anchored is not None:
        return anchored
    folder = media_path(version.adapter_path)
    files = []
    for name in sorted(lineage.ADAPTER_FILES):
        path = folder / name
        present = path.is_file()
        if name == lineage.ADAPTER_WEIGHTS:
            digest: str | None = version.adapter_sha256
        else:
            digest = lineage.file_sha256(path) if present else None
        files.append({"name": name, "sha256": digest, "bytes": path.stat().st_size if present else None})
    return files


def version_anchor_facts(version: ModelVersion) -> dict[str, Any] | None:
    """Where the version's manifest hash is anchored (``ledger.proofs.anchor_facts``), its subject named as
    ``model_version:<job id>`` even on anchors requested before subjects were stored."""
    return anchor_facts_for(version.anchor, anchor_subject("model_version", version.job_id))


# Withdrawn records (issue 17)


def version_revocation_flag(version: ModelVersion) -> VersionRevocation | None:
    """The version's flag, or None when it trained on no revoked record (no query when the version was read with
    ``versions_visible_to``, which joins it)."""
    try:
        return version.revoked_records_flag
    except VersionRevocation.DoesNotExist:
        return None


def version_revoked_records(version: ModelVersion) -> tuple[int, int]:
    """(distinct revoked records in the snapshots of the version's whole ancestry, how many of them erased);
    (0, 0) for a version that trained on none."""
    flag = version_revocation_flag(version)
    return (flag.revoked_records, flag.erased_records) if flag is not None else (0, 0)


def version_revoked_summary(version: ModelVersion) -> dict[str, Any] | None:
    """What a list says of a flagged version: ``{"count", "erased", "flagged_at"}``, or None (no query when joined)."""
    flag = version_revocation_flag(version)
    if flag is None:
        return None
    return {"count": flag.revoked_records, "erased": flag.erased_records, "flagged_at": flag.flagged_at}


def version_supersession(version: ModelVersion) -> dict[str, Any]:
    """What the version supersedes (the flagged version its job retrained without withdrawn records) and what
    supersedes it (its retrains: their jobs, and their versions once trained). Two queries."""
    job = FineTuneJob.objects.select_related("supersedes").get(pk=version.job_id)
    retrains = list(
        FineTuneJob.objects.filter(supersedes=version).select_related("version").order_by("-created_at", "-id")
    )
    return {
        "supersedes": job.supersedes,
        "retrains": retrains,
        "superseded_by": next((j.version for j in retrains if j.status == FineTuneJob.Status.SUCCEEDED), None),
        "retrain_running": next((j for j in retrains if not j.is_finished), None),
    }


def notices_unread_count(*, user: Any) -> int:
    """How many notices of versions reached by a revocation ``user`` has not read (one query; 0 signed out)."""
    if not _signed_in(user):
        return 0
    return VersionNotice.objects.filter(owner=user, read_at__isnull=True).count()


def notices_unread(*, user: Any, limit: int = 20) -> list[VersionNotice]:
    """``user``'s unread notices, newest first, with their versions and revocations (one query)."""
    if not _signed_in(user):
        return []
    rows = VersionNotice.objects.filter(owner=user, read_at__isnull=True).select_related(
        "version__revoked_records_flag", "revocation__datanet"
    )
    return list(rows.order_by("-created_at", "-id")[:limit])
