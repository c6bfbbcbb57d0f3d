"""ModelFactory pages: base models, the fine-tune form, jobs, versions, compare, merge."""


app_name = "modelfactory"

urlpatterns: list = []
