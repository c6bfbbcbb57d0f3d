from django.contrib import admin

from .models import BaseModel


@admin.register(BaseModel)
class BaseModelAdmin(admin.ModelAdmin):
    list_display = ("name", "architecture", "parameters", "context_length", "licence", "source", "is_default")
    list_filter = ("source", "is_default", "architecture")
    search_fields = ("name", "path", "architecture")
    readonly_fields = ("created_at", "weights_sha256")
