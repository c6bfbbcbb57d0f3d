"""Attribution pages: the ancestry panel fragments (panel_urls) and earnings and claims (rewards_urls)."""

from django.urls import include, path

app_name = "attribution"

urlpatterns = [
    path("", include("attribution.panel_urls")),
    path("", include("attribution.rewards_urls")),
]
