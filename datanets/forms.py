"""The Datanet pages' forms: they clean what a person typed; the services decide what is allowed."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from . import viewer
from .licences import LICENCE_CHOICES, LICENCES, compatible_licences
from .models import LANGUAGE_CHOICES, RECORD_TYPE_CHOICES, Contribution, Datanet, Revocation
from .revocation import EXPLANATION_MAX_CHARS

MB = 1024 * 1024
UPLOAD_EXTENSIONS = (".jsonl", ".csv", ".txt", ".md", ".zip")
MAX_FILES_PER_UPLOAD = 10
BAD_ROWS_HELP = {
    Contribution.BadRows.REJECT_WHOLE: "If any row is invalid, nothing from that file is stored; you get the list.",
    Contribution.BadRows.EXCLUDE_BAD: "Good rows are stored; bad rows are left out and listed on the contribution.",
}


class DatanetForm(forms.Form):
    """Create or edit a Datanet. Quotas are typed in MB and stored in bytes."""

    name = forms.CharField(max_length=120)
    summary = forms.CharField(max_length=300, required=False, help_text="One line shown in the list.")
    description = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6}),
        required=False,
        help_text="Markdown. Raw HTML is shown as text, never run.",
    )
    tags = forms.CharField(required=False, help_text="Comma-separated, e.g. <code>medicine, qa, french</code>.")
    domain = forms.CharField(max_length=60, required=False, help_text="One word, e.g. <code>medicine</code>.")
    record_type = forms.ChoiceField(choices=RECORD_TYPE_CHOICES)
    licence = forms.ChoiceField(choices=LICENCE_CHOICES)
    visibility = forms.ChoiceField(choices=Datanet.Visibility.choices)
    contribution_policy = forms.ChoiceField(choices=Datanet.Policy.choices, label="Who may contribute")
    language = forms.ChoiceField(
        choices=[("", "any / not checked"), *LANGUAGE_CHOICES],
        required=False,
        help_text="Records in another language are flagged by the checks.",
    )
    daily_quota_mb = forms.DecimalField(
        label="Daily quota per contributor (MB)", min_value=Decimal("0.1"), max_digits=9, decimal_places=1
    )
    daily_quota_files = forms.IntegerField(label="Daily quota per contributor (files)", min_value=1)

    def __init__(self, *args: Any, datanet: Datanet | None = None, has_records: bool = False, **kwargs: Any) -> None:
        if datanet is not None:
            kwargs.setdefault(
                "initial",
                {
                    "name": datanet.name,
                    "summary": datanet.summary,
                    "description": datanet.description,
                    "tags": ", ".join(datanet.tags),
                    "domain": datanet.domain,
                    "record_type": datanet.record_type,
                    "licence": datanet.licence,
                    "visibility": datanet.visibility,
                    "contribution_policy": datanet.contribution_policy,
                    "language": datanet.language,
                    "daily_quota_mb": round(Decimal(datanet.daily_quota_bytes) / MB, 1),
                    "daily_quota_files": datanet.daily_quota_files,
                },
            )
        else:
            kwargs.setdefault("initial", {"licence": "CC-BY-4.0", "daily_quota_mb": 10, "daily_quota_files": 20})
        super().__init__(*args, **kwargs)
        if has_records:
            # a disabled field keeps its initial value whatever is posted: the type can't change under its records
            self.fields["record_type"].disabled = True
            self.fields["record_type"].help_text = "Fixed: this Datanet already has records of this type."

    def service_fields(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        data["daily_quota_bytes"] = int(data.pop("daily_quota_mb") * MB)
        data["tags"] = [t for t in data["tags"].split(",") if t.strip()]
        return data


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Several files under one name. Empty files and unknown extensions pass here: each file is judged on its own
    when it is submitted, so one bad file doesn't stop the others."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": ",".join(UPLOAD_EXTENSIONS)}))
        kwargs.setdefault("allow_empty_file", True)
        super().__init__(*args, **kwargs)

    def clean(self, data: Any, initial: Any = None) -> list[Any]:
        files = data if isinstance(data, list | tuple) else [data] if data else []
        return [super(MultipleFileField, self).clean(f, initial) for f in files]


class ContributeForm(forms.Form):
    """Files or pasted records, a licence the Datanet accepts, and what to do with bad rows."""

    files = MultipleFileField(
        required=False,
        help_text="One or more .jsonl, .csv, .txt, .md files, or a .zip of those. Each file becomes a contribution.",
    )
    text = forms.CharField(
        required=False,
        label="…or paste records",
        widget=forms.Textarea(attrs={"rows": 5, "placeholder": '{"text": "one record per line"}'}),
    )
    licence = forms.ChoiceField(choices=())
    bad_rows = forms.ChoiceField(
        choices=Contribution.BadRows.choices,
        widget=forms.RadioSelect,
        initial=Contribution.BadRows.REJECT_WHOLE,
        label="If some rows are invalid",
    )

    def __init__(self, *args: Any, datanet: Datanet, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["licence"].choices = [
            (spdx, f"{spdx}: {LICENCES[spdx].name}") for spdx in compatible_licences(datanet.licence)
        ]
        self.fields["licence"].initial = datanet.licence
        self.fields["licence"].help_text = f"The licences a {datanet.licence} Datanet can take in."
        self.uploads: list[Any] = []

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        self.uploads = cleaned.get("files") or []
        if len(self.uploads) > MAX_FILES_PER_UPLOAD:
            raise ValidationError(f"at most {MAX_FILES_PER_UPLOAD} files at once")
        if not self.uploads and not (cleaned.get("text") or "").strip():
            raise ValidationError("choose a file to upload, or paste some records")
        return cleaned


class TickedIdsField(forms.TypedMultipleChoiceField):
    """The ids ticked on a list page: any whole number passes here, since the service checks each one against what
    the user may act on."""

    def __init__(self, *, required_message: str) -> None:
        super().__init__(coerce=int, choices=(), error_messages={"required": required_message})

    def valid_value(self, value: Any) -> bool:
        return True


class DecisionForm(forms.Form):
    contribution = TickedIdsField(required_message="tick one")
    action = forms.ChoiceField(choices=[("accept", "accept"), ("reject", "reject")])
    reason = forms.CharField(required=False, max_length=2000)


class ReasonForm(forms.Form):
    reason = forms.CharField(max_length=2000)


class RevokeForm(forms.Form):
    """A withdrawal or a takedown: why, in a word and in a sentence, and whether the bytes go too. ``confirmed`` is
    set by the confirmation step, which says what will happen before anything does."""

    reason = forms.ChoiceField(choices=Revocation.Reason.choices)
    explanation = forms.CharField(
        required=False,
        max_length=EXPLANATION_MAX_CHARS,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Shown to the contributor and the curators; only its hash goes into the receipt.",
    )
    erase = forms.BooleanField(
        required=False,
        label="Also erase the bytes (erasure request)",
        help_text="The text goes from storage, exports and indexes everywhere; its hash stays, so old proofs verify.",
    )
    confirmed = forms.BooleanField(required=False, widget=forms.HiddenInput)

    def revocation(self) -> dict[str, Any]:
        """The cleaned choice as the revocation services take it: ``reason``, ``explanation`` and ``erase``."""
        return {name: self.cleaned_data[name] for name in ("reason", "explanation", "erase")}


class TakedownForm(RevokeForm):
    """The ticked records of one Datanet to take down; the service checks each against the user's rights."""

    record = forms.TypedMultipleChoiceField(coerce=int, choices=(), error_messages={"required": "tick a record"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        ids = self.data.getlist("record") if hasattr(self.data, "getlist") else []
        self.fields["record"].choices = [(i, i) for i in ids]


class PersonForm(forms.Form):
    role = forms.ChoiceField(choices=[("curator", "curator"), ("member", "member")])
    op = forms.ChoiceField(choices=[("add", "add"), ("remove", "remove")])
    username = forms.CharField(max_length=150)


class BrowseForm(forms.Form):
    """The list page's search box, filters and sort order; all optional."""

    q = forms.CharField(required=False, max_length=200, label="Search")
    domain = forms.CharField(required=False, max_length=60)
    type = forms.ChoiceField(choices=[("", "any type"), *RECORD_TYPE_CHOICES], required=False, label="Record type")
    licence = forms.ChoiceField(choices=[("", "any licence"), *LICENCE_CHOICES], required=False)
    sort = forms.ChoiceField(
        choices=[("newest", "newest"), ("records", "most records"), ("contributors", "most contributors")],
        required=False,
    )

    def selector_filters(self) -> dict[str, str]:
        data = self.cleaned_data if self.is_bound and hasattr(self, "cleaned_data") else {}
        return {
            "search": data.get("q") or "",
            "domain": data.get("domain") or "",
            "record_type": data.get("type") or "",
            "licence": data.get("licence") or "",
            "sort": data.get("sort") or "newest",
        }


class RecordFilterForm(forms.Form):
    """The record viewer's search box, filters and keyset cursor; all optional. What doesn't clean is not applied."""

    q = forms.CharField(required=False, max_length=200, label="Search")
    check = forms.ChoiceField(choices=[("", "any check"), *viewer.CHECK_CHOICES], required=False)
    flag = forms.ChoiceField(choices=[("", "any flag"), *viewer.FLAG_CHOICES], required=False)
    contributor = forms.CharField(required=False, max_length=150)
    status = forms.ChoiceField(choices=[("", "any status"), *viewer.STATUS_CHOICES], required=False)
    excluded = forms.ChoiceField(
        choices=[("", "excluded or not"), ("no", "not excluded"), ("yes", "excluded")], required=False
    )
    contribution = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)
    snapshot = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)
    after = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)
    before = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def filters(self, *, snapshot: Any = None) -> viewer.RecordFilters:
        self.is_valid()
        data = {k: v for k, v in getattr(self, "cleaned_data", {}).items() if k not in self.errors}
        return viewer.RecordFilters(
            q=(data.get("q") or "").strip(),
            check=data.get("check") or "",
            flag=data.get("flag") or "",
            contributor=(data.get("contributor") or "").strip(),
            status=data.get("status") or "",
            excluded=data.get("excluded") or "",
            contribution=data.get("contribution"),
            snapshot=snapshot,
        )


class RecordBulkForm(forms.Form):
    """Ticked records and what to do with them; the service checks each record against the curator's rights."""

    record = TickedIdsField(required_message="tick a record")
    action = forms.ChoiceField(choices=[("exclude", "exclude"), ("restore", "restore")])
    reason = forms.CharField(required=False, max_length=2000)
