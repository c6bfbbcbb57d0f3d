"""The OpenAI-compatible API, mounted at /v1/."""


app_name = "openai"

urlpatterns: list = []
