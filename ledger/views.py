"""The chain page: what GET /api/chain/ says, for people."""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from .selectors import chain_facts


@require_GET
def chain(request: HttpRequest) -> HttpResponse:
    facts = chain_facts()
    for contract in facts["contracts"] + facts["retired"]:
        contract["abi_json"] = json.dumps(contract["abi"], indent=2) if contract["abi"] is not None else ""
        contract["abi_functions"] = sum(1 for item in contract["abi"] or [] if item.get("type") == "function")
        contract["abi_events"] = sum(1 for item in contract["abi"] or [] if item.get("type") == "event")
    return render(request, "ledger/chain.html", {"facts": facts})
