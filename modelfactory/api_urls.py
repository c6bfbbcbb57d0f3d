"""ModelFactory REST API: jobs and versions, mounted at /api/modelfactory/."""


app_name = "modelfactory-api"

urlpatterns: list = []
