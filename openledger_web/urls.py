from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("accounts/", include("openledger_web.account_urls")),
    path("admin/", admin.site.urls),
    path("datanets/", include("datanets.urls")),
    path("api/datanets/", include("datanets.api_urls")),
    path("models/", include("modelfactory.urls")),
    path("api/modelfactory/", include("modelfactory.api_urls")),
    path("ask/", include("inference.urls")),
    path("api/runs/", include("inference.api_urls")),
    path("v1/", include("inference.openai_urls")),
    path("attribution/", include("attribution.urls")),
    path("api/", include("openledger_web.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api_schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api_schema"), name="api_docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="api_schema"), name="api_redoc"),
]
