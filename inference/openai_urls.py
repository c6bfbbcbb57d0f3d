"""The OpenAI-compatible API, mounted at /v1/."""

from django.urls import path

from . import api

app_name = "openai"

urlpatterns = [
    path("models", api.ModelListApi.as_view(), name="models"),
    path("chat/completions", api.ChatCompletionsApi.as_view(), name="chat_completions"),
    path("completions", api.CompletionsApi.as_view(), name="completions"),
]
