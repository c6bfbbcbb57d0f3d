from csp.constants import SELF, UNSAFE_INLINE
from csp.decorators import csp_update
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("accounts/", include("accounts.urls")),
    path("admin/", admin.site.urls),
    path("datanets/", include("datanets.urls")),
    path("api/datanets/", include("datanets.api_urls")),
    path("models/", include("modelfactory.urls")),
    path("api/modelfactory/", include("modelfactory.api_urls")),
    path("ask/", include("inference.urls")),
    path("api/runs/", include("inference.api_urls")),
    path("chain/", include("ledger.urls")),
    path("api/chain/", include("ledger.api_urls")),
    path("v1/", include("inference.openai_urls")),
    path("attribution/", include("attribution.urls")),
    path("attribution/", include("rewards.urls")),
    path("api/rewards/", include("rewards.api_urls")),
    path("api/attribution/", include("attribution.api_urls")),
    path("governance/", include("governance.urls")),
    path("api/governance/", include("governance.api_urls")),
    path("api/", include("openledger_web.api_urls")),
    path("api/", include("accounts.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api_schema"),
    # the split view serves Swagger UI's start-up script as a file of its own, which the CSP allows
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api_schema"), name="api_docs"),
    # Redoc styles itself with injected <style> elements and renders the schema in a blob: worker
    path(
        "api/redoc/",
        csp_update({"style-src": [UNSAFE_INLINE], "worker-src": [SELF, "blob:"]})(
            SpectacularRedocView.as_view(url_name="api_schema")
        ),
        name="api_redoc",
    ),
]
