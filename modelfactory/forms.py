"""The ModelFactory pages' forms: they clean what a person typed and build a TrainingConfig; the services decide
what is allowed (snapshots the user may use, licences, a parent on the same base)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from datanets.models import Snapshot

from . import architectures
from .config import DEVICES, FORMATTING_MODES, MAX_PROCESSES, PRESET_LABELS, PRESETS, SCHEDULES, TrainingConfig
from .estimates import PRECISION_LABELS, PRECISIONS
from .models import BaseModel, FineTuneJob, ModelVersion
from .selectors import precision_refusals, processes_error, snapshots_usable_by, versions_visible_to
from .services import MAX_MERGE_WEIGHT

# The config settings the form shows, in the form's order; the others keep TrainingConfig's defaults.
CONFIG_FIELDS = (
    "eval_fraction",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "learning_rate",
    "schedule",
    "warmup_steps",
    "epochs",
    "max_steps",
    "batch_size",
    "gradient_accumulation",
    "max_length",
    "seed",
    "gradient_checkpointing",
    "processes",
    "device",
    "precision",
)
TARGET_LABELS = {
    "attention": "Attention projections (q, k, v, o, or the family's fused equivalents): small and fast",
    "all-linear": "All linear layers (attention and MLP): more capacity, slower",
    "custom": "These layers:",
}
MAX_CUSTOM_TARGETS = 32
FORMATTING_HELP = {
    "chat_template": "the tokenizer's chat template (a user turn, then the assistant's answer; loss on the answer)",
    "plain": "plain text (the record's text as it is; loss on every token)",
}
RECORD_TYPE_HELP = {
    "text": "Text records train as plain text: the model learns to continue writing like them.",
    "instruction": "Instruction records (prompt, response) go through the base model's chat template: the prompt is "
    "the user's turn, the response the assistant's, and only the response is learned.",
    "chat": "Chat records (messages) go through the chat template as they are; the assistant turns are learned.",
    "classification": "Classification records (text, label) become a question and its label through the chat "
    "template; the label is learned.",
}
DEVICE_LABELS = dict(zip(DEVICES, ("Any worker (a GPU where it has one)", "A CUDA GPU"), strict=True))
CHECKPOINTING_LABELS = {
    "auto": "auto: on only when the job would not fit the worker's memory",
    "off": "off",
    "on": "on",
}
MAX_NAME = 200
MAX_DESCRIPTION = 5000


def preset_initial(name: str) -> dict[str, Any]:
    """A preset's values as form initial data; KeyError for an unknown preset."""
    config = PRESETS[name]
    values = {field: getattr(config, field) for field in CONFIG_FIELDS}
    values["length_mode"] = "steps" if config.max_steps is not None else "epochs"
    values["max_steps"] = config.max_steps or ""
    return values


def presets_for_script() -> dict[str, dict[str, Any]]:
    """Every preset as {form field: value}, for the buttons that fill the form in the browser."""
    return {name: preset_initial(name) for name in PRESETS}


class SnapshotChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj: Snapshot) -> str:
        return f"{obj.datanet.name} · snapshot #{obj.number}"


def _pick_errors(noun: str, *, required: str) -> dict[str, str]:
    """The messages of a field that picks rows the user may use; ``noun`` names one row ("snapshot")."""
    return {
        "required": required,
        "invalid_choice": f"{noun.capitalize()} %(value)s does not exist, or you may not use it.",
        "invalid_pk_value": f"%(pk)s is not a {noun} id.",
    }


class _JobForm(forms.Form):
    """What every job form asks first: the name and description of the version it will make."""

    name = forms.CharField(max_length=MAX_NAME)
    description = forms.CharField(max_length=MAX_DESCRIPTION, required=False, widget=forms.Textarea(attrs={"rows": 2}))

    def chosen_ids(self, field: str) -> set[str]:
        """The ids ticked in the multiple-choice ``field``, as strings (what the page compares to), valid or not."""
        values = self[field].value() or []
        return {str(v) for v in (values if isinstance(values, list | tuple) else [values])}


class FineTuneForm(_JobForm):
    """Everything a fine-tune needs. ``start`` is "base-<id>" or "version-<id>" (continue training that version on
    its own base), so a parent and a base can never disagree."""

    start = forms.ChoiceField(
        label="Start from",
        error_messages={"invalid_choice": "%(value)s is not a base model or a version you may continue."},
    )
    snapshots = SnapshotChoiceField(
        queryset=Snapshot.objects.none(),
        widget=forms.CheckboxSelectMultiple,
        error_messages=_pick_errors("snapshot", required="Choose at least one Datanet snapshot."),
    )
    formatting = forms.ChoiceField(
        label="Records become text through",
        choices=[("auto", "the usual way for their type"), *((m, FORMATTING_HELP[m]) for m in FORMATTING_HELP)],
        initial="auto",
    )
    eval_fraction = forms.FloatField(
        label="Held out for evaluation", help_text="A share of the records, 0 to 0.5; 0 turns evaluation off."
    )
    lora_rank = forms.IntegerField(label="LoRA rank", help_text="1-256. Higher learns more and costs more.")
    lora_alpha = forms.FloatField(label="LoRA alpha", help_text="Scales the update; usually 1-2x the rank.")
    lora_dropout = forms.FloatField(label="LoRA dropout", help_text="0 to below 1.")
    target_modules = forms.ChoiceField(
        label="Target modules", choices=list(TARGET_LABELS.items()), widget=forms.RadioSelect
    )
    custom_target_modules = forms.CharField(
        label="Layers to adapt",
        required=False,
        max_length=1000,
        help_text="With “These layers”: module names separated by commas, e.g. <code>q_proj, v_proj</code> "
        "(Llama, Mistral, Qwen2, Gemma), <code>qkv_proj</code> (Phi-3), <code>query_key_value</code> (GPT-NeoX), "
        "<code>c_attn</code> (GPT-2).",
    )
    learning_rate = forms.FloatField(label="Learning rate", help_text="LoRA trains well around 1e-4 to 3e-4.")
    schedule = forms.ChoiceField(label="Schedule", choices=[(s, s) for s in SCHEDULES])
    warmup_steps = forms.IntegerField(label="Warm-up steps")
    length_mode = forms.ChoiceField(
        label="Train for",
        choices=[("epochs", "a number of epochs"), ("steps", "a number of steps")],
        widget=forms.RadioSelect,
    )
    epochs = forms.IntegerField(label="Epochs", required=False)
    max_steps = forms.IntegerField(label="Max steps", required=False, help_text="Optimizer steps.")
    batch_size = forms.IntegerField(label="Batch size")
    gradient_accumulation = forms.IntegerField(label="Gradient accumulation", help_text="Micro-batches per step.")
    max_length = forms.IntegerField(label="Max sequence length", help_text="Tokens; longer records are cut.")
    seed = forms.IntegerField(label="Seed", help_text="The same seed, data and settings train the same adapter.")
    gradient_checkpointing = forms.ChoiceField(
        label="Gradient checkpointing",
        choices=list(CHECKPOINTING_LABELS.items()),
        required=False,
        help_text="Recomputes each layer in the backward pass: much less memory, about 1.5x the training time, "
        "the same adapter.",
    )
    processes = forms.IntegerField(
        label="Processes",
        required=False,
        min_value=1,
        max_value=MAX_PROCESSES,
        help_text="Data parallel: this many processes (one per GPU, or CPU processes sharing a worker's cores) each "
        "train on a share of every batch; the same adapter. At most what a live training worker announces.",
    )
    device = forms.ChoiceField(
        label="Device",
        choices=list(DEVICE_LABELS.items()),
        required=False,
        help_text="“A CUDA GPU” waits for a worker that has one.",
    )
    precision = forms.ChoiceField(
        label="Precision",
        choices=list(PRECISION_LABELS.items()),
        required=False,
        error_messages={"invalid_choice": f"%(value)s is not a precision; choose {', '.join(PRECISIONS)}."},
        help_text="bf16 and QLoRA are offered while a CUDA GPU worker that can run them is online.",
    )

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        kwargs.setdefault("initial", {**preset_initial("balanced"), "formatting": "auto"})
        super().__init__(*args, **kwargs)
        self.user = user
        self.bases = list(BaseModel.objects.order_by("-is_default", "name"))
        self.versions = list(versions_visible_to(user=user).order_by("base_model_id", "-created_at")[:200])
        self.fields["start"].choices = [
            ("Base models", [(f"base-{b.pk}", f"{b.name}{' (default)' if b.is_default else ''}") for b in self.bases]),
            (
                "Continue training a version",
                [(f"version-{v.pk}", f"{v.name} (#{v.pk}, on {v.base_model.name})") for v in self.versions],
            ),
        ]
        default = next((b for b in self.bases if b.is_default), self.bases[0] if self.bases else None)
        if default is not None and "start" not in self.initial:
            self.initial["start"] = f"base-{default.pk}"
        self.fields["snapshots"].queryset = snapshots_usable_by(user=user)
        # every precision is a valid choice, so that a refused one gets its reason rather than "not a choice";
        # the page lists only those a live worker can run
        self.refused_precisions = precision_refusals()
        self.fields["precision"].widget.choices = [
            (value, label) for value, label in PRECISION_LABELS.items() if value not in self.refused_precisions
        ]
        self.base_model: BaseModel | None = None
        self.parent_version: ModelVersion | None = None
        self.config: TrainingConfig | None = None

    def snapshot_rows(self) -> list[Snapshot]:
        return list(self.fields["snapshots"].queryset)

    def chosen_snapshot_ids(self) -> set[str]:
        return self.chosen_ids("snapshots")

    def clean_start(self) -> str:
        value = self.cleaned_data["start"]
        kind, _, pk = value.partition("-")
        if kind == "base":
            self.base_model = next((b for b in self.bases if str(b.pk) == pk), None)
        else:
            self.parent_version = next((v for v in self.versions if str(v.pk) == pk), None)
            self.base_model = self.parent_version.base_model if self.parent_version else None
        if self.base_model is None:
            raise ValidationError("Choose a base model or a model version.")
        return value

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.errors.keys() & {*CONFIG_FIELDS, "length_mode"}:
            return cleaned  # a field that did not clean has its own message; the config can't be built yet
        values = {name: cleaned.get(name) for name in CONFIG_FIELDS}
        if values["target_modules"] == "custom":
            names = [n.strip() for n in (cleaned.get("custom_target_modules") or "").replace("\n", ",").split(",")]
            names = list(dict.fromkeys(n for n in names if n))
            if not names:
                self.add_error("custom_target_modules", "List the layers to adapt, or choose a preset.")
                return cleaned
            if len(names) > MAX_CUSTOM_TARGETS:
                self.add_error("custom_target_modules", f"At most {MAX_CUSTOM_TARGETS} layer names.")
                return cleaned
            values["target_modules"] = names
        values["gradient_checkpointing"] = values["gradient_checkpointing"] or "auto"
        values["processes"] = values["processes"] or 1
        values["device"] = values["device"] or "auto"
        values["precision"] = values["precision"] or "fp32"
        if refused := self.refused_precisions.get(values["precision"]):
            self.add_error("precision", refused)
            return cleaned
        if cleaned.get("length_mode") == "steps":
            if values["max_steps"] is None:
                self.add_error("max_steps", "Give the number of steps, or train for epochs.")
                return cleaned
            values["epochs"] = 1
        else:
            if values["epochs"] is None:
                self.add_error("epochs", "Give the number of epochs, or train for a number of steps.")
                return cleaned
            values["max_steps"] = None
        snapshots = cleaned.get("snapshots") or []
        record_types = {s.datanet.record_type for s in snapshots}
        formatting = cleaned.get("formatting", "auto")
        if formatting != "auto":
            for record_type in record_types:
                if formatting not in FORMATTING_MODES.get(record_type, ()):
                    allowed = " or ".join(FORMATTING_MODES.get(record_type, ()))
                    self.add_error("formatting", f"{record_type.capitalize()} records can only become {allowed}.")
                    return cleaned
            values["formatting"] = {t: formatting for t in record_types}
        config = TrainingConfig.from_dict(values)
        custom = isinstance(config.target_modules, list)
        context_length = self.base_model.context_length if self.base_model else 10**9
        for name, message in config.validate(context_length=context_length).items():
            field = "custom_target_modules" if name == "target_modules" and custom else name
            self.add_error(field if field in self.fields else None, message)
        # a continued version keeps its parent's layers; a new adapter's must be layers of the base model's family
        family = self.base_model.model_type if self.base_model is not None and self.parent_version is None else None
        targets_clean = not self.errors.keys() & {"target_modules", "custom_target_modules"}
        if (
            family is not None
            and targets_clean
            and (message := architectures.target_module_error(config.target_modules, family))
        ):
            self.add_error("custom_target_modules" if custom else "target_modules", message)
        if not self.errors and (message := processes_error(config)):
            self.add_error("processes" if config.processes > 1 else "device", message)
        if not self.errors:
            self.config = config
        return cleaned


class PresetChoice(forms.Form):
    preset = forms.ChoiceField(
        choices=[(name, name) for name in PRESET_LABELS],
        error_messages={
            "invalid_choice": "There is no preset called %(value)s; choose quick-test, balanced or thorough."
        },
    )


class VersionSearchForm(forms.Form):
    q = forms.CharField(required=False, max_length=200, label="Search")


class CompareForm(forms.Form):
    a = forms.IntegerField(min_value=1, max_value=2**63 - 1, error_messages={"invalid": "Choose a version to compare."})
    b = forms.IntegerField(
        min_value=1,
        max_value=2**63 - 1,
        required=False,
        error_messages={"invalid": "Choose a version to compare."},
        help_text="Left empty (the version page's Compare button), the page offers versions to compare A with.",
    )


class BaseModelRegisterForm(forms.Form):
    name = forms.CharField(max_length=200)
    path = forms.CharField(
        max_length=1000, label="Folder path", help_text="A Hugging Face model folder on the workers' disk."
    )
    licence = forms.CharField(max_length=100, required=False, help_text="SPDX id, e.g. <code>Apache-2.0</code>.")


MAX_MERGE_PARENTS = 8


class MergeForm(_JobForm):
    """Two or more versions of one base, each with a weight (``weight_<id>`` fields), a method and a name."""

    versions = forms.ModelMultipleChoiceField(
        queryset=ModelVersion.objects.none(),
        widget=forms.CheckboxSelectMultiple,
        error_messages=_pick_errors("version", required="Choose at least two versions to merge."),
    )
    method = forms.ChoiceField(choices=FineTuneJob.MergeMethod.choices, widget=forms.RadioSelect, initial="linear")
    density = forms.FloatField(
        initial=0.5,
        min_value=0.01,
        max_value=1.0,
        help_text="TIES only: the share of each adapter's largest changes kept (0.01-1).",
    )

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["versions"].queryset = versions_visible_to(user=user).order_by("base_model__name", "-created_at")
        self.parents: list[tuple[ModelVersion, float]] = []

    def version_rows(self) -> list[dict[str, Any]]:
        """Each offered version with its typed weight (kept when the form comes back with errors) and tick."""
        chosen = self.chosen_ids("versions")
        rows = []
        for version in self.fields["versions"].queryset.select_related("owner")[:200]:
            weight = self.data.get(f"weight_{version.pk}", "1.0") if self.is_bound else "1.0"
            rows.append({"version": version, "weight": str(weight)[:20], "checked": str(version.pk) in chosen})
        return rows

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        posted = [str(v) for v in self.data.getlist("versions")] if hasattr(self.data, "getlist") else []
        # the parents keep the order they were ticked in (the queryset's order is the page's)
        order = {pk: i for i, pk in enumerate(posted)}
        versions = sorted(cleaned.get("versions") or [], key=lambda v: order.get(str(v.pk), 0))
        if not versions:
            return cleaned
        if len(versions) < 2:
            self.add_error("versions", "Choose at least two versions to merge.")
            return cleaned
        if len(versions) > MAX_MERGE_PARENTS:
            self.add_error("versions", f"At most {MAX_MERGE_PARENTS} versions can be merged at once.")
            return cleaned
        field = forms.FloatField(min_value=-MAX_MERGE_WEIGHT, max_value=MAX_MERGE_WEIGHT)
        for version in versions:
            try:
                weight = field.clean(self.data.get(f"weight_{version.pk}", "1.0"))
            except ValidationError as e:
                self.add_error("versions", f"Weight of {version.name}: {' '.join(e.messages)}")
                return cleaned
            self.parents.append((version, weight))
        if all(weight == 0 for _, weight in self.parents):
            self.add_error("versions", "At least one weight must be non-zero.")
        return cleaned
