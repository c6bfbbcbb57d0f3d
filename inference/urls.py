"""Inference pages: ask, run history, shared run pages."""


app_name = "inference"

urlpatterns: list = []
