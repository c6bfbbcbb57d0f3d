"""The ask form: which model version, a prompt or a chat, and the generation options.

The form cleans what a person typed and says clearly what is wrong; ``inference.services.run_submit`` decides what is
allowed (limits, rate, the version) and its refusals land on the same form.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxLengthValidator, MaxValueValidator
from django.http import QueryDict

from modelfactory.models import ModelVersion

from . import services

# the service's own bounds, so that the form never accepts what run_submit then refuses, nor the other way round
MAX_MESSAGES = services.MAX_MESSAGES
MAX_STOP_SEQUENCES = services.MAX_STOP
MAX_STOP_LENGTH = services.MAX_STOP_CHARS
MAX_SEED = services.MAX_SEED
CHAT_ROLES = (("system", "system"), ("user", "user"), ("assistant", "assistant"))


class AskForm(forms.Form):
    """One question to one model version, or to a composite of several (``compose``, a composite model id: see
    ``inference.composites``), optionally to the base model too. ``messages`` come as parallel lists
    ``message_role``/``message_content`` in the posted data, one pair per chat turn, so the page can add turns."""

    class Mode:
        PROMPT = "prompt"
        CHAT = "chat"

    version = forms.ModelChoiceField(
        queryset=ModelVersion.objects.none(),
        required=False,
        error_messages={
            "required": "Pick a model version to ask.",
            "invalid_choice": "That model version does not exist or is not published.",
        },
        widget=forms.HiddenInput,
    )
    compose = forms.CharField(
        label="Or compose versions",
        required=False,
        max_length=400,
        widget=forms.TextInput(attrs={"placeholder": "mix:mv-3=0.7,mv-5=0.3;method=linear", "spellcheck": "false"}),
        help_text="Several published versions answering as one, their adapters combined with these weights: "
        "method linear, ties or dare_linear/dare_ties (;density=0.5, ;seed=0). Replaces the version picked above.",
    )
    mode = forms.ChoiceField(
        choices=((Mode.CHAT, "Chat"), (Mode.PROMPT, "Plain prompt")), initial=Mode.CHAT, widget=forms.RadioSelect
    )
    prompt = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 5, "placeholder": "Text for the model to continue…"}),
        help_text="Sent as is, without the chat template.",
    )
    temperature = forms.FloatField(
        min_value=0,
        max_value=2,
        initial=0,
        help_text="0 is greedy: the same answer every time.",
        widget=forms.NumberInput(attrs={"step": "0.05"}),
    )
    top_p = forms.FloatField(
        label="Top-p",
        min_value=0.01,
        max_value=1,
        initial=1,
        help_text="Sample from the smallest set of tokens whose probabilities add up to this.",
        widget=forms.NumberInput(attrs={"step": "0.05"}),
    )
    max_new_tokens = forms.IntegerField(label="Max new tokens", min_value=1, initial=128)
    stop = forms.CharField(
        label="Stop sequences",
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "one per line"}),
        help_text=f"One per line, at most {MAX_STOP_SEQUENCES}; the answer ends before the first one it writes.",
    )
    seed = forms.IntegerField(
        required=False, min_value=0, max_value=MAX_SEED, help_text="Makes sampling reproducible. Empty: random."
    )
    compare = forms.BooleanField(
        label="Compare with the base model", required=False, help_text="Asks the base model alone the same question."
    )

    def __init__(self, *args: Any, versions: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["version"].queryset = versions
        limit = settings.INFERENCE_MAX_NEW_TOKENS
        self.fields["max_new_tokens"].max_value = limit
        self.fields["max_new_tokens"].validators.append(MaxValueValidator(limit))
        self.fields["max_new_tokens"].widget.attrs.update(min=1, max=limit)
        self.fields["max_new_tokens"].help_text = f"1 to {limit}."
        prompt_limit = settings.INFERENCE_MAX_PROMPT_CHARS
        self.fields["prompt"].max_length = prompt_limit
        self.fields["prompt"].validators.append(MaxLengthValidator(prompt_limit))
        self.fields["prompt"].widget.attrs["maxlength"] = prompt_limit
        self.chat_rows = self._chat_rows()

    def _chat_rows(self) -> list[dict[str, str]]:
        """The chat turns as typed (for re-showing the form), one empty user turn when there are none."""
        rows: list[dict[str, str]] = []
        if self.is_bound and isinstance(self.data, QueryDict):
            roles = self.data.getlist("message_role")
            contents = self.data.getlist("message_content")
            rows = [{"role": r, "content": c} for r, c in zip(roles, contents, strict=False)]
        elif self.initial.get("messages"):
            rows = [dict(m) for m in self.initial["messages"]]
        return rows or [{"role": "user", "content": ""}]

    def _clean_messages(self) -> list[dict[str, str]]:
        if not self.is_bound or not isinstance(self.data, QueryDict):
            raise ValidationError("Write a message.")
        roles = self.data.getlist("message_role")
        contents = self.data.getlist("message_content")
        if len(roles) != len(contents):
            raise ValidationError("Each chat message needs a role and a text.")
        if len(roles) > MAX_MESSAGES:
            raise ValidationError(f"A chat may have at most {MAX_MESSAGES} messages.")
        allowed = {value for value, _ in CHAT_ROLES}
        messages = []
        for role, content in zip(roles, contents, strict=True):
            if role not in allowed:
                raise ValidationError(f"Unknown chat role {role[:20]!r}: use system, user or assistant.")
            if content.strip():
                messages.append({"role": role, "content": content})
        if not messages:
            raise ValidationError("Write a message.")
        if messages[-1]["role"] != "user":
            raise ValidationError("The last message must be yours (role user): the model answers it.")
        total = sum(len(m["content"]) for m in messages)
        if total > settings.INFERENCE_MAX_PROMPT_CHARS:
            raise ValidationError(
                f"The chat is {total:,} characters long; the limit is {settings.INFERENCE_MAX_PROMPT_CHARS:,}."
            )
        return messages

    def clean_stop(self) -> list[str]:
        lines = [line for line in self.cleaned_data["stop"].replace("\r\n", "\n").split("\n") if line]
        if len(lines) > MAX_STOP_SEQUENCES:
            raise ValidationError(f"At most {MAX_STOP_SEQUENCES} stop sequences, one per line.")
        if any(len(line) > MAX_STOP_LENGTH for line in lines):
            raise ValidationError(f"A stop sequence may be at most {MAX_STOP_LENGTH} characters long.")
        return lines

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        compose = (data.get("compose") or "").strip()
        data["compose"] = compose
        if compose and not compose.startswith("mix:"):
            self.add_error(
                "compose", "A composite starts with mix: and names versions with weights, e.g. mix:mv-3=0.7,mv-5=0.3."
            )
        elif not compose and data.get("version") is None and "version" not in self.errors:
            self.add_error("version", "Pick a model version to ask, or compose several.")
        if data.get("mode") == self.Mode.CHAT:
            try:
                data["messages"] = self._clean_messages()
            except ValidationError as e:
                self.add_error(None, e)
        elif data.get("mode") == self.Mode.PROMPT and "prompt" in data and not data["prompt"].strip():
            self.add_error("prompt", "Write a prompt.")
        return data

    def submission(self) -> dict[str, Any]:
        """The keyword arguments of ``run_submit`` (without user and version) for the cleaned form."""
        data = self.cleaned_data
        options: dict[str, Any] = {
            "temperature": data["temperature"],
            "top_p": data["top_p"],
            "max_tokens": data["max_new_tokens"],
            "stop": data["stop"],
        }
        if data.get("seed") is not None:
            options["seed"] = data["seed"]
        if data["mode"] == self.Mode.CHAT:
            return {"messages": data["messages"], "options": options}
        return {"prompt": data["prompt"], "options": options}
