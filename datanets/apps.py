from django.apps import AppConfig


class DatanetsConfig(AppConfig):
    name = "datanets"
