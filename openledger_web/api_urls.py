from django.urls import path

from . import api

urlpatterns = [
    path("health/", api.HealthApi.as_view(), name="api_health"),
]
