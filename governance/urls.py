from django.urls import path

from . import views

app_name = "governance"

urlpatterns = [
    path("", views.proposal_list, name="proposal_list"),
    path("new/", views.proposal_new, name="proposal_new"),
    path("delegate/", views.delegate_page, name="delegate_page"),
    path("delegate/sign/", views.delegate, name="delegate"),
    path("parameters/", views.parameters, name="parameters"),
    path("transactions/<int:transaction_id>/", views.transaction_status, name="transaction"),
    path("proposals/<str:proposal_id>/", views.proposal_detail, name="proposal_detail"),
    path("proposals/<str:proposal_id>/vote/", views.vote, name="vote"),
    path("proposals/<str:proposal_id>/stake/", views.bond, name="bond"),
    path("proposals/<str:proposal_id>/<str:action>/", views.step, name="step"),
]
