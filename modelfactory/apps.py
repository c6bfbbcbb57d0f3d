from django.apps import AppConfig


class ModelfactoryConfig(AppConfig):
    name = "modelfactory"
