"""/api/governance/: one path per operation (see governance/api.py)."""

from __future__ import annotations

from django.urls import path

from . import api

app_name = "governance_api"

# ids are matched as any segment and read by the views, so that a malformed one is a JSON 404 like a missing one
urlpatterns = [
    path("proposals/", api.ProposalListApi.as_view(), name="proposal_list"),
    path(
        "proposals/prepare/parameters/",
        api.ProposalPrepareParametersApi.as_view(),
        name="proposal_prepare_parameters",
    ),
    path(
        "proposals/prepare/deployment/",
        api.ProposalPrepareDeploymentApi.as_view(),
        name="proposal_prepare_deployment",
    ),
    path("proposals/relay/", api.ProposalRelayApi.as_view(), name="proposal_relay"),
    path("proposals/<str:proposal_id>/", api.ProposalDetailApi.as_view(), name="proposal_detail"),
    path("proposals/<str:proposal_id>/ballot/", api.BallotApi.as_view(), name="ballot"),
    path("proposals/<str:proposal_id>/vote/", api.VoteApi.as_view(), name="vote"),
    path("proposals/<str:proposal_id>/stake/permit/", api.StakePermitApi.as_view(), name="stake_permit"),
    path("proposals/<str:proposal_id>/stake/bond/", api.StakeBondApi.as_view(), name="stake_bond"),
    path("proposals/<str:proposal_id>/stake/settle/", api.StakeSettleApi.as_view(), name="stake_settle"),
    path("proposals/<str:proposal_id>/queue/", api.ProposalQueueApi.as_view(), name="proposal_queue"),
    path("proposals/<str:proposal_id>/execute/", api.ProposalExecuteApi.as_view(), name="proposal_execute"),
    path("delegations/message/", api.DelegationMessageApi.as_view(), name="delegation_message"),
    path("delegations/relay/", api.DelegationRelayApi.as_view(), name="delegation_relay"),
    path("transactions/<str:transaction_id>/", api.TransactionDetailApi.as_view(), name="transaction_detail"),
    path("parameters/", api.ParameterListApi.as_view(), name="parameter_list"),
    path("parameters/history/", api.ParameterHistoryApi.as_view(), name="parameter_history"),
    path("voting-power/", api.VotingPowerApi.as_view(), name="voting_power"),
]
